// Command detour-webhook is detour's mutating admission webhook: it injects
// the detour-agent sidecar into pods annotated detour.dev/inject=enabled.
// It runs in the cluster (deploy/base), two replicas behind a Service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/internal/logging"
	"github.com/detour-dev/detour/internal/version"
	"github.com/detour-dev/detour/webhook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "detour-webhook:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "detour-webhook:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage error")

type options struct {
	addr, opsAddr     string
	kubeconfig        string
	logLevel          string
	inject            webhook.InjectConfig
	pullPolicy        string
	certs             webhook.CertConfig
	certCheckInterval time.Duration
	shutdownTimeout   time.Duration
	showVersion       bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{inject: webhook.DefaultInjectConfig(), certs: webhook.DefaultCertConfig()}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		o.certs.Namespace = ns
	}
	fs := flag.NewFlagSet("detour-webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", ":8443", "serve admission reviews (TLS) here")
	fs.StringVar(&o.opsAddr, "ops-addr", ":8081", "serve /healthz, /readyz and /metrics (plain HTTP) here")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig to use outside a cluster (default: in-cluster config)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.inject.AgentImage, "agent-image", o.inject.AgentImage, "agent image for pods without a detour.dev/agent-image annotation")
	fs.StringVar(&o.pullPolicy, "agent-pull-policy", string(o.inject.PullPolicy), "imagePullPolicy of the injected containers: Always, IfNotPresent or Never")
	fs.StringVar(&o.certs.Namespace, "namespace", o.certs.Namespace, "namespace of the webhook's Service and certificate Secret (default $POD_NAMESPACE)")
	fs.StringVar(&o.certs.ServiceName, "service-name", o.certs.ServiceName, "the webhook's Service; the certificate covers its DNS names")
	fs.StringVar(&o.certs.SecretName, "cert-secret", o.certs.SecretName, "Secret holding the serving certificate")
	fs.StringVar(&o.certs.WebhookConfigName, "webhook-config", o.certs.WebhookConfigName, "MutatingWebhookConfiguration whose caBundle the webhook keeps current")
	fs.BoolVar(&o.certs.SelfManaged, "self-managed-certs", o.certs.SelfManaged, "create and rotate the CA and certificate; false reads the Secret as it is (cert-manager)")
	fs.DurationVar(&o.certs.CAValidity, "ca-validity", o.certs.CAValidity, "lifetime of a self-managed CA; renewed with a third left")
	fs.DurationVar(&o.certs.CertValidity, "cert-validity", o.certs.CertValidity, "lifetime of a self-managed serving certificate; renewed with a third left")
	fs.DurationVar(&o.certCheckInterval, "cert-check-interval", 10*time.Second, "how often to re-read the certificate Secret and rotate what is due")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long in-flight reviews may take")
	fs.DurationVar(&o.inject.AgentMaxIdle, "agent-max-idle", 0, "remove the opt-in of workloads whose agents all had no session for this long, which rolls them without the agent (needs the idle RBAC, deploy/idle); 0: never")
	clusterCIDRs := fs.String("cluster-cidrs", "", "pod and Service ranges that agents dial for local processes, comma-separated (detour install detects them)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	switch p := corev1.PullPolicy(o.pullPolicy); p {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		o.inject.PullPolicy = p
	default:
		return o, fmt.Errorf("%w: --agent-pull-policy %q: want Always, IfNotPresent or Never", errUsage, o.pullPolicy)
	}
	for _, c := range strings.Split(*clusterCIDRs, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if _, err := netip.ParsePrefix(c); err != nil {
			return o, fmt.Errorf("%w: --cluster-cidrs: %q is not a CIDR", errUsage, c)
		}
		o.inject.ClusterCIDRs = append(o.inject.ClusterCIDRs, c)
	}
	if o.inject.AgentMaxIdle < 0 {
		return o, fmt.Errorf("%w: --agent-max-idle %s: want 0 (off) or a positive duration", errUsage, o.inject.AgentMaxIdle)
	}
	if o.inject.AgentImage == "" {
		return o, fmt.Errorf("%w: --agent-image is empty", errUsage)
	}
	if o.certs.CertValidity <= 0 || o.certs.CAValidity < o.certs.CertValidity {
		return o, fmt.Errorf("%w: want 0 < --cert-validity ≤ --ca-validity", errUsage)
	}
	return o, nil
}

func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := logging.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return logging.New(w, lvl), nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// runReaper runs a reaper with its own pod informer: only the pods the
// webhook labelled for the rule, and of each only what the reaper reads
// (no spec: the webhook holds no one's environment; of the annotations
// only the rule's own).
func runReaper(ctx context.Context, log *zap.Logger, client kubernetes.Interface, rule webhook.ReapRule, interval time.Duration, onRemove func(webhook.WorkloadRef)) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = rule.Label + "=" + rule.LabelValue
		}),
		informers.WithTransform(func(obj any) (any, error) {
			if p, ok := obj.(*corev1.Pod); ok {
				var ann map[string]string
				if v, ok := p.Annotations[rule.Annotation]; ok {
					ann = map[string]string{rule.Annotation: v}
				}
				return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
					Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
					Labels: p.Labels, Annotations: ann, OwnerReferences: p.OwnerReferences, DeletionTimestamp: p.DeletionTimestamp,
				}, Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP}}, nil
			}
			return obj, nil
		}))
	pods := factory.Core().V1().Pods()
	r := &webhook.Reaper{
		Log: log.Named(rule.Name), Client: client, Rule: rule, Pods: pods.Lister(), Synced: pods.Informer().HasSynced,
		Interval: interval, OnRemove: onRemove,
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	log.Info("reaper on", zap.String("rule", rule.Name), zap.Duration("interval", r.Interval))
	return r.Run(ctx)
}

// replaceInterval is how often the restorer asks replaced pods' agents:
// a replaced workload gets its app back between its grace period and the
// grace period plus this.
const replaceInterval = 5 * time.Second

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.Version)
		return nil
	}
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.UserAgent = "detour-webhook/" + version.Version
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	services := factory.Core().V1().Services()
	servicesSynced := services.Informer().HasSynced
	metrics := webhook.NewMetrics()
	certs := webhook.NewCertManager(log.Named("certs"), client, o.certs, metrics)
	srv := &webhook.Server{
		Log: log,
		Handler: webhook.NewInjector(log.Named("inject"), webhook.ListerServices{Lister: services.Lister()}, o.inject).
			WithLiveServices(webhook.LiveServices{Client: client}),
		Certs:           certs,
		Metrics:         metrics,
		Ready:           func() bool { return certs.Ready() && servicesSynced() },
		ShutdownTimeout: o.shutdownTimeout,
	}
	log.Info("starting", zap.String("version", version.Version), zap.String("agentImage", o.inject.AgentImage),
		zap.Bool("selfManagedCerts", o.certs.SelfManaged), zap.String("namespace", o.certs.Namespace))

	g, gctx := errgroup.WithContext(ctx)
	factory.Start(gctx.Done())
	g.Go(func() error {
		<-gctx.Done()
		factory.Shutdown()
		return nil
	})
	g.Go(func() error { return certs.Run(gctx, o.certCheckInterval) })
	if o.inject.AgentMaxIdle > 0 {
		g.Go(func() error {
			return runReaper(gctx, log, client, webhook.IdleRule, webhook.ReapInterval(o.inject.AgentMaxIdle), metrics.IdleRemoved)
		})
	}
	g.Go(func() error {
		return runReaper(gctx, log, client, webhook.ReplaceRule, replaceInterval, metrics.ReplaceRestored)
	})
	g.Go(func() error { return srv.Run(gctx, o.addr, o.opsAddr) })
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
