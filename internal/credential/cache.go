package credential

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// cacheKey is the SHA-256 of token, a zero byte and audience: the cache
// never holds a token.
type cacheKey [sha256.Size]byte

// keyFor returns the cache key of token for audience. Tokens of the usual
// size are hashed from a stack buffer, without allocating.
func keyFor(token, audience string) cacheKey {
	var buf [2048]byte
	b := append(buf[:0], token...)
	b = append(b, 0)
	b = append(b, audience...)
	return sha256.Sum256(b)
}

// entry is one cached outcome: a review, or the rejection err.
type entry struct {
	review  *Review
	err     error
	expires time.Time
}

// sweepInterval is how often a shard drops its expired entries even when
// it is not full.
const sweepInterval = time.Minute

// cache is a bounded map from cacheKey to entry, split into shards with a
// read-write lock each so that concurrent lookups of different tokens do
// not contend. When a shard is full it drops its expired entries, then
// arbitrary ones, down to seven eighths of its share, so the cost of
// eviction is spread over the inserts that follow.
type cache struct {
	shards   []cacheShard
	mask     uint64
	perShard int
}

type cacheShard struct {
	mu        sync.RWMutex
	m         map[cacheKey]entry
	lastSweep time.Time
	// Keep neighbouring shards' locks off one cache line.
	_ [64]byte
}

// newCache returns a cache of at most size entries (size ≥ 1).
func newCache(size int) *cache {
	n := 1
	for n < 64 && size/(2*n) >= 16 {
		n *= 2
	}
	c := &cache{shards: make([]cacheShard, n), mask: uint64(n - 1), perShard: size / n}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]entry)
	}
	return c
}

func (c *cache) shard(k *cacheKey) *cacheShard {
	return &c.shards[binary.LittleEndian.Uint64(k[:8])&c.mask]
}

func (c *cache) get(k *cacheKey) (entry, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e, ok := s.m[*k]
	s.mu.RUnlock()
	return e, ok
}

func (c *cache) put(k *cacheKey, e entry, now time.Time) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.perShard {
		s.evict(now, c.perShard-max(1, c.perShard/8))
	} else if now.Sub(s.lastSweep) >= sweepInterval {
		s.evict(now, c.perShard)
	}
	s.m[*k] = e
}

// evict drops the shard's expired entries, then arbitrary ones until at
// most target remain. Called with s.mu held.
func (s *cacheShard) evict(now time.Time, target int) {
	s.lastSweep = now
	for k, e := range s.m {
		if !now.Before(e.expires) {
			delete(s.m, k)
		}
	}
	// Map iteration starts at a random place, so what goes is arbitrary.
	for k := range s.m {
		if len(s.m) <= target {
			break
		}
		delete(s.m, k)
	}
}

// len returns the number of entries, expired ones included.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
