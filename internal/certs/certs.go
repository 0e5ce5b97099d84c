package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// The operator's own certificates: the Secret, the CA ConfigMap (in its
// namespace, "system" before kustomize sets it) and the webhook
// configurations, by the names config/default gives them. Other names given
// by flags need their own RBAC.
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets;configmaps,verbs=create
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=get;update,resourceNames=sallyport-certs
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;update,resourceNames=sallyport-ca
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;update,resourceNames=sallyport-validating-webhook-configuration
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update,resourceNames=sallyport-mutating-webhook-configuration

// Defaults of the names.
const (
	DefaultSecretName    = "sallyport-certs"
	CAConfigMapName      = "sallyport-ca"
	CAConfigMapKey       = "ca.crt"
	DefaultCheckInterval = time.Minute
	DefaultSyncInterval  = 10 * time.Second
)

// Config configures a Manager.
type Config struct {
	// Namespace holds the Secret and the CA ConfigMap.
	Namespace string
	// SecretName defaults to DefaultSecretName.
	SecretName string
	// Names are the serving certificate's subject alternative names: DNS
	// names, or IP addresses.
	Names []string
	// CertDirs get tls.crt and tls.key (and ca.crt) written.
	CertDirs []string
	// ValidatingWebhookConfiguration and MutatingWebhookConfiguration get
	// the CA bundle injected; empty skips one.
	ValidatingWebhookConfiguration string
	MutatingWebhookConfiguration   string
	// CADuration and LeafDuration default to DefaultCADuration and
	// DefaultLeafDuration.
	CADuration, LeafDuration time.Duration
	// CheckInterval is how often the leader checks rotation, the webhook
	// configurations and the ConfigMap; SyncInterval how often every replica
	// reads the Secret for a renewed certificate.
	CheckInterval, SyncInterval time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Manager keeps the certificates.
type Manager struct {
	cfg    Config
	policy Policy
	writer client.Client
	reader client.Reader
	log    logr.Logger
	ready  atomic.Bool
}

// New returns a Manager that writes with c and reads with r, which must not
// be a cache (the operator may only get its own Secret, by name).
func New(cfg Config, c client.Client, r client.Reader, log logr.Logger) (*Manager, error) {
	if cfg.Namespace == "" {
		return nil, errors.New("self-managed certificates need a namespace (--cert-namespace or POD_NAMESPACE)")
	}
	if len(cfg.CertDirs) == 0 {
		return nil, errors.New("self-managed certificates need a directory to write to")
	}
	if cfg.SecretName == "" {
		cfg.SecretName = DefaultSecretName
	}
	if cfg.CADuration == 0 {
		cfg.CADuration = DefaultCADuration
	}
	if cfg.LeafDuration == 0 {
		cfg.LeafDuration = DefaultLeafDuration
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := Policy{CADuration: cfg.CADuration, LeafDuration: cfg.LeafDuration}
	for _, n := range cfg.Names {
		if ip := net.ParseIP(n); ip != nil {
			p.IPs = append(p.IPs, ip)
		} else if n != "" {
			p.DNSNames = append(p.DNSNames, n)
		}
	}
	if len(p.DNSNames) == 0 && len(p.IPs) == 0 {
		return nil, errors.New("self-managed certificates need at least one name")
	}
	return &Manager{cfg: cfg, policy: p, writer: c, reader: r, log: log}, nil
}

// Ready reports whether the certificate files are written.
func (m *Manager) Ready() bool { return m.ready.Load() }

func (m *Manager) key() client.ObjectKey {
	return client.ObjectKey{Namespace: m.cfg.Namespace, Name: m.cfg.SecretName}
}

// Bootstrap makes sure the Secret holds a certificate that can serve and
// writes it to the certificate directories. Every replica calls it before
// its servers start: the first to find no Secret creates it, one whose
// certificate cannot serve repairs it (optimistically: a conflict re-reads),
// the others take what is stored, so all serve the same certificate.
// Scheduled renewal is left to the leader (Rotator).
func (m *Manager) Bootstrap(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		err := m.reconcileSecret(ctx, false)
		if err == nil {
			return nil
		}
		m.log.Info("Waiting for the certificate Secret", "secret", m.key().String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("bootstrap certificates: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// reconcileSecret brings the Secret to the planned state and writes the
// files.
func (m *Manager) reconcileSecret(ctx context.Context, rotate bool) error {
	now := m.cfg.Now()
	var sec corev1.Secret
	err := m.reader.Get(ctx, m.key(), &sec)
	found := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get Secret %s: %w", m.key(), err)
	}
	cur := StateFromData(sec.Data)
	next, reasons, err := m.policy.Plan(now, cur, rotate)
	if err != nil {
		return err
	}
	if len(reasons) > 0 {
		m.log.Info("Renewing certificates", "secret", m.key().String(), "reasons", reasons)
		if !found {
			sec = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: m.cfg.Namespace, Name: m.cfg.SecretName, Labels: labels()},
				Type:       corev1.SecretTypeTLS,
			}
			sec.Data = next.Data()
			if err := m.writer.Create(ctx, &sec); err != nil {
				return fmt.Errorf("create Secret %s: %w", m.key(), err)
			}
		} else {
			sec.Data = next.Data()
			if err := m.writer.Update(ctx, &sec); err != nil {
				return fmt.Errorf("update Secret %s: %w", m.key(), err)
			}
		}
	}
	return m.writeFiles(next, now)
}

// writeFiles writes the serving certificate to every directory, when it
// differs from what is there: the key first, then the certificate, each
// replaced atomically, so a certificate watcher never pairs a new
// certificate with an old key.
func (m *Manager) writeFiles(s State, now time.Time) error {
	for _, dir := range m.cfg.CertDirs {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create certificate directory: %w", err)
		}
		for _, f := range []struct {
			name string
			data []byte
			mode os.FileMode
		}{{"tls.key", s.Key, 0o600}, {"tls.crt", s.Cert, 0o644}, {"ca.crt", s.Bundle(now), 0o644}} {
			if err := writeIfChanged(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
				return err
			}
		}
	}
	if !m.ready.Swap(true) {
		m.log.Info("Serving certificates written", "dirs", m.cfg.CertDirs)
	}
	return nil
}

func writeIfChanged(path string, data []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), mode)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// publish injects the CA bundle into the webhook configurations and the
// ConfigMap.
func (m *Manager) publish(ctx context.Context) error {
	var sec corev1.Secret
	if err := m.reader.Get(ctx, m.key(), &sec); err != nil {
		return fmt.Errorf("get Secret %s: %w", m.key(), err)
	}
	bundle := StateFromData(sec.Data).Bundle(m.cfg.Now())
	if len(bundle) == 0 {
		return errors.New("the certificate Secret holds no CA")
	}
	var errs []error
	if n := m.cfg.ValidatingWebhookConfiguration; n != "" {
		var wc admissionregistrationv1.ValidatingWebhookConfiguration
		errs = append(errs, m.inject(ctx, n, &wc, func() bool {
			changed := false
			for i := range wc.Webhooks {
				changed = setCABundle(&wc.Webhooks[i].ClientConfig, bundle) || changed
			}
			return changed
		}))
	}
	if n := m.cfg.MutatingWebhookConfiguration; n != "" {
		var wc admissionregistrationv1.MutatingWebhookConfiguration
		errs = append(errs, m.inject(ctx, n, &wc, func() bool {
			changed := false
			for i := range wc.Webhooks {
				changed = setCABundle(&wc.Webhooks[i].ClientConfig, bundle) || changed
			}
			return changed
		}))
	}
	errs = append(errs, m.publishConfigMap(ctx, string(bundle)))
	return errors.Join(errs...)
}

// setCABundle sets one webhook's CA bundle and says whether it changed.
func setCABundle(c *admissionregistrationv1.WebhookClientConfig, bundle []byte) bool {
	if bytes.Equal(c.CABundle, bundle) {
		return false
	}
	c.CABundle = bundle
	return true
}

func (m *Manager) inject(ctx context.Context, name string, obj client.Object, set func() bool) error {
	if err := m.reader.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
		return fmt.Errorf("get webhook configuration %s: %w", name, err)
	}
	if !set() {
		return nil
	}
	if err := m.writer.Update(ctx, obj); err != nil {
		return fmt.Errorf("inject the CA bundle into %s: %w", name, err)
	}
	m.log.Info("Injected the CA bundle", "webhookConfiguration", name)
	return nil
}

func (m *Manager) publishConfigMap(ctx context.Context, bundle string) error {
	key := client.ObjectKey{Namespace: m.cfg.Namespace, Name: CAConfigMapName}
	var cm corev1.ConfigMap
	err := m.reader.Get(ctx, key, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: labels()},
			Data:       map[string]string{CAConfigMapKey: bundle},
		}
		if err := m.writer.Create(ctx, &cm); err != nil {
			return fmt.Errorf("create ConfigMap %s: %w", key, err)
		}
	case err != nil:
		return fmt.Errorf("get ConfigMap %s: %w", key, err)
	case cm.Data[CAConfigMapKey] != bundle:
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[CAConfigMapKey] = bundle
		if err := m.writer.Update(ctx, &cm); err != nil {
			return fmt.Errorf("update ConfigMap %s: %w", key, err)
		}
	default:
		return nil
	}
	m.log.Info("Published the CA bundle", "configMap", key.String())
	return nil
}

func labels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "sallyport", "app.kubernetes.io/component": "certificates"}
}

// Rotator is the leader's part: it renews the certificates on schedule and
// keeps the CA bundle injected and published, checking every CheckInterval
// (and sooner after a failure).
func (m *Manager) Rotator() manager.Runnable { return &loop{m: m, leader: true} }

// Syncer is every replica's part: it writes the Secret's certificate to the
// certificate directories when the leader renews it.
func (m *Manager) Syncer() manager.Runnable { return &loop{m: m} }

type loop struct {
	m      *Manager
	leader bool
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: rotation
// runs on the leader, following the Secret on every replica.
func (l *loop) NeedLeaderElection() bool { return l.leader }

// Start implements manager.Runnable.
func (l *loop) Start(ctx context.Context) error {
	m := l.m
	interval := m.cfg.SyncInterval
	if l.leader {
		interval = m.cfg.CheckInterval
	}
	for {
		wait := interval
		var err error
		if l.leader {
			err = errors.Join(m.reconcileSecret(ctx, true), m.publish(ctx))
		} else {
			err = m.sync(ctx)
		}
		if err != nil && ctx.Err() == nil {
			m.log.Error(err, "Certificate management", "leader", l.leader)
			wait = min(interval, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// sync writes the stored certificate when it can serve; otherwise it waits
// for the leader to repair it.
func (m *Manager) sync(ctx context.Context) error {
	var sec corev1.Secret
	if err := m.reader.Get(ctx, m.key(), &sec); err != nil {
		return fmt.Errorf("get Secret %s: %w", m.key(), err)
	}
	now := m.cfg.Now()
	s := StateFromData(sec.Data)
	if err := m.policy.Usable(now, s); err != nil {
		return fmt.Errorf("the stored certificate cannot serve, waiting for the leader: %w", err)
	}
	return m.writeFiles(s, now)
}

// SplitNames splits a comma-separated list of names.
func SplitNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}
