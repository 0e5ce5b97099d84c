package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
)

// MaxJWKSSize bounds the JSON Web Key Set document read from the API
// server, and MaxJWKSKeys the keys taken from it.
const (
	MaxJWKSSize = 1 << 20
	MaxJWKSKeys = 100
)

// publicKey is one verification key of the issuer.
type publicKey struct {
	kid string
	// alg is the key's alg member; empty when the JWK does not restrict it.
	alg string
	rsa *rsa.PublicKey
	ec  *ecdsa.PublicKey
}

// signingAlg describes a JWS algorithm sallyport accepts. Anything else,
// "none" and the HMAC family in particular, is refused.
type signingAlg struct {
	hash crypto.Hash
	new  func() hash.Hash
	// curve is the curve of an ECDSA algorithm; nil for RSA.
	curve elliptic.Curve
}

var signingAlgs = map[string]signingAlg{
	"RS256": {hash: crypto.SHA256, new: sha256.New},
	"RS384": {hash: crypto.SHA384, new: sha512.New384},
	"RS512": {hash: crypto.SHA512, new: sha512.New},
	"ES256": {hash: crypto.SHA256, new: sha256.New, curve: elliptic.P256()},
	"ES384": {hash: crypto.SHA384, new: sha512.New384, curve: elliptic.P384()},
	"ES512": {hash: crypto.SHA512, new: sha512.New, curve: elliptic.P521()},
}

// verify reports whether sig is k's signature of input under alg.
func (k *publicKey) verify(alg string, a signingAlg, input string, sig []byte) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	h := a.new()
	h.Write([]byte(input))
	digest := h.Sum(nil)
	switch {
	case a.curve == nil && k.rsa != nil:
		return rsa.VerifyPKCS1v15(k.rsa, a.hash, digest, sig) == nil
	case a.curve != nil && k.ec != nil && k.ec.Curve == a.curve:
		// JWS ECDSA signatures are R and S as fixed-size big-endian
		// integers, concatenated (RFC 7518 §3.4).
		size := (a.curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(k.ec, digest, r, s)
	}
	return false
}

// jsonWebKey is the subset of RFC 7517 that RSA and EC signing keys use.
type jsonWebKey struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	// RSA.
	N string `json:"n"`
	E string `json:"e"`
	// EC.
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS parses a JSON Web Key Set, keeping the RSA and EC signature
// keys it can use and skipping others (encryption keys, unknown types). A
// document that is not a key set, or holds no usable key, is an error.
func parseJWKS(doc []byte) ([]*publicKey, error) {
	if len(doc) > MaxJWKSSize {
		return nil, fmt.Errorf("key set is larger than %d bytes", MaxJWKSSize)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("decode key set: %w", err)
	}
	var keys []*publicKey
	var errs []error
	for i, raw := range set.Keys {
		if len(keys) == MaxJWKSKeys {
			break
		}
		var jwk jsonWebKey
		if err := json.Unmarshal(raw, &jwk); err != nil {
			errs = append(errs, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		k, err := jwk.publicKey()
		if err != nil {
			errs = append(errs, fmt.Errorf("key %d (kid %q): %w", i, jwk.Kid, err))
			continue
		}
		if k != nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key set holds no usable signing key: %w", errors.Join(errs...))
	}
	return keys, nil
}

// publicKey returns the key, nil for a key that is not for signatures or of
// a type sallyport does not use, or an error for a malformed key.
func (j *jsonWebKey) publicKey() (*publicKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, nil
	}
	if j.Alg != "" {
		if _, ok := signingAlgs[j.Alg]; !ok {
			return nil, nil
		}
	}
	k := &publicKey{kid: j.Kid, alg: j.Alg}
	switch j.Kty {
	case "RSA":
		pub, err := rsaKey(j.N, j.E)
		if err != nil {
			return nil, err
		}
		if j.Alg != "" && signingAlgs[j.Alg].curve != nil {
			return nil, fmt.Errorf("RSA key with alg %s", j.Alg)
		}
		k.rsa = pub
	case "EC":
		pub, err := ecKey(j.Crv, j.X, j.Y)
		if err != nil {
			return nil, err
		}
		if j.Alg != "" && signingAlgs[j.Alg].curve != pub.Curve {
			return nil, fmt.Errorf("EC key on %s with alg %s", j.Crv, j.Alg)
		}
		k.ec = pub
	default:
		return nil, nil
	}
	return k, nil
}

func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := b64.DecodeString(n)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("RSA modulus is not base64url")
	}
	eb, err := b64.DecodeString(e)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("RSA exponent is not a base64url integer of at most 4 bytes")
	}
	var exp int
	for _, b := range eb {
		exp = exp<<8 | int(b)
	}
	if exp < 3 || exp%2 == 0 {
		return nil, errors.New("RSA exponent is not an odd integer of at least 3")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: exp}
	if bits := pub.N.BitLen(); bits < 2048 || bits > 8192 {
		return nil, fmt.Errorf("RSA key of %d bits; 2048 to 8192 are accepted", bits)
	}
	return pub, nil
}

func ecKey(crv, x, y string) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported curve %q", crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	xb, err := b64.DecodeString(x)
	if err != nil || len(xb) != size {
		return nil, fmt.Errorf("EC x coordinate is not %d base64url bytes", size)
	}
	yb, err := b64.DecodeString(y)
	if err != nil || len(yb) != size {
		return nil, fmt.Errorf("EC y coordinate is not %d base64url bytes", size)
	}
	point := make([]byte, 0, 1+2*size)
	point = append(point, 4)
	point = append(point, xb...)
	point = append(point, yb...)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("EC point: %w", err)
	}
	return pub, nil
}
