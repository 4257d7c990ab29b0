package dataplane

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Fixed settings of the receiver pods. They are constants rather than spec fields because
// the receiver's own behaviour depends on them (probe paths, graceful shutdown).
const (
	// receiverUID is the non-root user and group the receiver runs as (distroless "nonroot").
	receiverUID int64 = 65532
	// receiverTerminationGrace leaves the receiver time to drain in-flight Sync requests and
	// finish the current Async deliveries before it is killed.
	receiverTerminationGrace int64 = 30
	// receiverTmpSize bounds the writable /tmp of the read-only root filesystem.
	receiverTmpSize = "64Mi"
	// receiverContainer is the container name in the receiver pods.
	receiverContainer = "receiver"
	// receiverPortName names the callback port in the pod and the Service.
	receiverPortName = "http"
	// receiverMetricsPortName names the metrics port in the pod and the Service.
	receiverMetricsPortName = "metrics"
)

// ReceiverSettings are one CallbackReceiver's data plane, resolved from its spec and the
// manager's defaults: everything the Desired* functions need.
type ReceiverSettings struct {
	// Receiver is the CallbackReceiver: it names the objects and owns them.
	Receiver *v1alpha1.CallbackReceiver
	// Name names the StatefulSet, Service, ServiceAccount, Role and RoleBinding.
	Name string
	// Headless names the headless Service of the StatefulSet's pods.
	Headless string
	// Table is the name of the receiver's routing table.
	Table string
	// Image is the container image.
	Image string
	// Replicas is the CallbackReceiver's desired number of pods (spec.replicas).
	Replicas int32
	// WorkloadReplicas is the StatefulSet's spec.replicas: Replicas, or more while the
	// pods a scale-down removes are being drained (set by the reconciler).
	WorkloadReplicas int32
	// SelectServing makes the Service select only pods labelled LabelServing. It is false
	// while a receiver migrates from a Deployment (whose pods lack the label) until the
	// StatefulSet's pods are ready.
	SelectServing bool
	// Resources are the receiver container's resources.
	Resources corev1.ResourceRequirements
	// SpoolSize is the size of each pod's spool PersistentVolumeClaim.
	SpoolSize resource.Quantity
	// StorageClassName of the spool claims; nil for the cluster's default class.
	StorageClassName *string
	// Stateless: the spool is not on the pods (spool.jetStream), so they get no claims and
	// a scale-down needs no drain. ResolveReceiver sets it with the JetStream spool.
	Stateless bool
	// ServiceType is the Service's type.
	ServiceType corev1.ServiceType
	// Port is the callback port of the pods and the Service.
	Port int32
	// TrustedProxies are CIDRs whose X-Forwarded-For the receiver trusts.
	TrustedProxies []string
	// JetStream, when set, is the receiver's JetStream spool (spec.spool.jetStream):
	// the pods get --spool-url instead of --spool-dir.
	JetStream *v1alpha1.JetStreamSpool
	// Retention keeps delivered callbacks for replay (--retention); 0: off.
	Retention time.Duration
	// OTLPEndpoint exports spans (--otlp-endpoint); "": off.
	OTLPEndpoint string
}

// errUnsupported marks a spec this manager accepts but cannot run: a terminal failure
// until the spec or the manager changes.
type errUnsupported string

func (e errUnsupported) Error() string { return string(e) }

// ResolveReceiver turns a CallbackReceiver into the settings of its data plane. An error
// is terminal: only a change of the spec can fix it.
func ResolveReceiver(r *v1alpha1.CallbackReceiver, defaultImage string) (*ReceiverSettings, error) {
	if len(r.Name) > MaxNameLength {
		return nil, errUnsupported(fmt.Sprintf("name %q is longer than %d characters: its StatefulSet %q could not create pods (the controller-revision-hash label would exceed 63 characters)",
			r.Name, MaxNameLength, ObjectName(r.Name)))
	}
	s := &ReceiverSettings{
		Receiver:       r,
		Name:           ObjectName(r.Name),
		Headless:       HeadlessName(r.Name),
		Table:          TableName(r.Name),
		Image:          defaultImage,
		Replicas:       r.Spec.EffectiveReplicas(),
		SelectServing:  true,
		SpoolSize:      resource.MustParse(v1alpha1.DefaultSpoolSize),
		ServiceType:    corev1.ServiceTypeClusterIP,
		Port:           r.Spec.EffectivePort(),
		TrustedProxies: r.Spec.TrustedProxies,
	}
	if r.Spec.Retention != nil {
		s.Retention = r.Spec.Retention.Duration
	}
	if r.Spec.Tracing != nil {
		s.OTLPEndpoint = r.Spec.Tracing.OTLPEndpoint
	}
	if r.Spec.Resources != nil {
		s.Resources = *r.Spec.Resources.DeepCopy()
	}
	if svc := r.Spec.Service; svc != nil && svc.Type != "" {
		s.ServiceType = svc.Type
	}
	s.WorkloadReplicas = s.Replicas
	if s.Port == MetricsPort {
		return nil, errUnsupported(fmt.Sprintf("service.port %d is the receiver's metrics port; choose another", s.Port))
	}
	if sp := r.Spec.Spool; sp != nil {
		if sp.JetStream != nil {
			if s.Retention > 0 {
				// The JetStream spool keeps no delivered callbacks: refuse rather than run
				// receivers that silently cannot replay.
				return nil, errUnsupported("spec.retention (replay of delivered callbacks) is not supported with spool.jetStream in this version")
			}
			s.JetStream, s.Stateless = sp.JetStream.DeepCopy(), true
		}
		if e := sp.Embedded; e != nil {
			if e.Size != nil {
				s.SpoolSize = *e.Size
			}
			s.StorageClassName = e.StorageClassName
		}
	}
	return s, nil
}

// ReceiverPodLabels are the labels on a receiver's pods and its StatefulSet's selector
// (the Service selects them plus LabelServing). HPA (through status.selector), PDB, NetworkPolicy and ServiceMonitor select
// on these.
func ReceiverPodLabels(s *ReceiverSettings) map[string]string {
	return map[string]string{LabelName: s.Name, LabelInstance: s.Receiver.Name, LabelComponent: ComponentReceiver}
}

// ReceiverSelector is ReceiverPodLabels as a selector string (status.selector).
func ReceiverSelector(s *ReceiverSettings) string {
	return labels.SelectorFromSet(ReceiverPodLabels(s)).String()
}

// ReceiverAddress is the in-cluster base URL of a receiver's Service.
func ReceiverAddress(s *ReceiverSettings) string {
	return fmt.Sprintf("http://%s.%s.svc:%d", s.Name, s.Receiver.Namespace, s.Port)
}

// receiverLabels are the labels on every object a receiver owns.
func receiverLabels(s *ReceiverSettings) map[string]string {
	l := ReceiverPodLabels(s)
	l[LabelManagedBy] = ManagedByValue
	l[LabelPartOf] = ManagedByValue
	return l
}

// ownerReference makes the CallbackReceiver the controller of an object: deleting the
// receiver lets the garbage collector delete the object, and the reconciler never adopts
// an object another controller owns.
func ownerReference(s *ReceiverSettings) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1alpha1.GroupVersion.String()).
		WithKind("CallbackReceiver").
		WithName(s.Receiver.Name).
		WithUID(s.Receiver.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

// SpoolMaxBytesFraction is the share of the spool claim's size the receiver may fill
// with callbacks (--spool-max-bytes); the rest is bbolt's page overhead and free pages,
// so that a full spool answers 503 before the file system itself is full.
const SpoolMaxBytesFraction = 2

// ReceiverArgs are the receiver container's arguments: in-cluster mode reading the
// receiver's own table, the spool on the pod's claim capped at half the claim's size.
func ReceiverArgs(s *ReceiverSettings) []string {
	args := []string{
		"receiver",
		"--listen", ":" + strconv.Itoa(int(s.Port)),
		"--metrics-listen", ":" + strconv.Itoa(MetricsPort),
	}
	args = append(args, SpoolArgs(s)...)
	args = append(args, "--namespace", s.Receiver.Namespace, "--table", s.Table)
	if len(s.TrustedProxies) > 0 {
		args = append(args, "--trusted-proxies", strings.Join(s.TrustedProxies, ","))
	}
	args = append(args, "--admin-listen", AdminAddress)
	if s.Retention > 0 {
		args = append(args, "--retention", s.Retention.String())
	}
	if s.OTLPEndpoint != "" {
		args = append(args, "--otlp-endpoint", s.OTLPEndpoint)
	}
	return args
}

// SpoolArgs are the receiver's spool arguments: --spool-dir on its volume, or the
// JetStream spool of spec.spool.jetStream (a stream of its own per CallbackReceiver,
// JetStreamStreamName, so that receivers sharing a NATS cluster keep apart).
func SpoolArgs(s *ReceiverSettings) []string {
	js := s.JetStream
	if js == nil {
		return []string{"--spool-dir", SpoolDir,
			"--spool-max-bytes", strconv.FormatInt(s.SpoolSize.Value()/SpoolMaxBytesFraction, 10)}
	}
	replicas := js.Replicas
	if replicas <= 0 {
		replicas = v1alpha1.DefaultJetStreamReplicas
	}
	args := []string{
		"--spool-url", js.URL,
		"--spool-stream", JetStreamStreamName(s.Receiver),
		"--spool-replicas", strconv.Itoa(int(replicas)),
	}
	if js.CredentialsSecretRef != nil {
		args = append(args, "--spool-creds", NATSCredsDir+"/"+NATSCredsKey)
	}
	return args
}

// JetStreamStreamName is the stream of a CallbackReceiver on a JetStream spool:
// CALLBACKS_<namespace>_<name>, upper case, with '.' (not allowed in stream names) as '-'.
func JetStreamStreamName(r *v1alpha1.CallbackReceiver) string {
	return strings.ToUpper(strings.ReplaceAll("CALLBACKS_"+r.Namespace+"_"+r.Name, ".", "-"))
}

// DesiredServiceAccount is the receiver's identity.
func DesiredServiceAccount(s *ReceiverSettings) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(s.Name, s.Receiver.Namespace).
		WithLabels(receiverLabels(s)).WithOwnerReferences(ownerReference(s))
}

// DesiredRole lets the receiver read Secrets in its own namespace only: it watches its
// table Secrets by label. list and watch cannot be narrowed by resourceNames for a
// label-selected set, so a receiver namespace should hold nothing else secret, and
// receivers that must not read each other's tables belong in namespaces of their own.
func DesiredRole(s *ReceiverSettings) *rbacv1ac.RoleApplyConfiguration {
	return rbacv1ac.Role(s.Name, s.Receiver.Namespace).
		WithLabels(receiverLabels(s)).WithOwnerReferences(ownerReference(s)).
		WithRules(rbacv1ac.PolicyRule().
			WithAPIGroups("").
			WithResources("secrets").
			WithVerbs("get", "list", "watch"))
}

// DesiredRoleBinding binds DesiredRole to DesiredServiceAccount.
func DesiredRoleBinding(s *ReceiverSettings) *rbacv1ac.RoleBindingApplyConfiguration {
	return rbacv1ac.RoleBinding(s.Name, s.Receiver.Namespace).
		WithLabels(receiverLabels(s)).WithOwnerReferences(ownerReference(s)).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(s.Name)).
		WithSubjects(rbacv1ac.Subject().WithKind(rbacv1.ServiceAccountKind).WithName(s.Name).WithNamespace(s.Receiver.Namespace))
}

// ServiceSelector is the receiver Service's selector: the pod labels plus LabelServing
// (without it while SelectServing is false).
func ServiceSelector(s *ReceiverSettings) map[string]string {
	sel := ReceiverPodLabels(s)
	if s.SelectServing {
		sel[LabelServing] = ServingValue
	}
	return sel
}

// DesiredService exposes the receiver's callback port, on the serving pods only: the one
// port meant for the IM platform, which may be a LoadBalancer's. Metrics are never on it.
func DesiredService(s *ReceiverSettings) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(s.Name, s.Receiver.Namespace).
		WithLabels(receiverLabels(s)).WithOwnerReferences(ownerReference(s)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(s.ServiceType).
			WithSelector(ServiceSelector(s)).
			WithPorts(callbackPort(s)))
}

// DesiredHeadlessService gives the StatefulSet's pods their stable DNS names, serving or
// not (publishNotReadyAddresses), for identity rather than load balancing. It also carries
// the metrics port: it is never a LoadBalancer, and a ServiceMonitor selecting it scrapes
// every pod once, draining ones included (their backlog is what an alert watches).
func DesiredHeadlessService(s *ReceiverSettings) *corev1ac.ServiceApplyConfiguration {
	// Its own name label, so that whatever selects the receiver Service's labels does not
	// select it too.
	l := receiverLabels(s)
	l[LabelName] = s.Headless
	return corev1ac.Service(s.Headless, s.Receiver.Namespace).
		WithLabels(l).WithOwnerReferences(ownerReference(s)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(ReceiverPodLabels(s)).
			WithPorts(callbackPort(s),
				corev1ac.ServicePort().
					WithName(receiverMetricsPortName).
					WithProtocol(corev1.ProtocolTCP).
					WithPort(MetricsPort).
					WithTargetPort(intstr.FromString(receiverMetricsPortName))))
}

// callbackPort is the port the IM platform calls, on both Services.
func callbackPort(s *ReceiverSettings) *corev1ac.ServicePortApplyConfiguration {
	return corev1ac.ServicePort().
		WithName(receiverPortName).
		WithProtocol(corev1.ProtocolTCP).
		WithPort(s.Port).
		WithTargetPort(intstr.FromString(receiverPortName))
}

// DesiredStatefulSet runs the receiver in in-cluster mode with a restricted security
// context, probes, the spec's resources, WorkloadReplicas pods and a spool
// PersistentVolumeClaim per pod, which outlives the pod: a rolled, evicted or
// rescheduled pod comes back to its own claim and delivers its backlog. Claims are
// retained when the StatefulSet scales down or is deleted (the manager drains a pod
// before a scale-down removes it, and never deletes a claim).
func DesiredStatefulSet(s *ReceiverSettings) *appsv1ac.StatefulSetApplyConfiguration {
	probe := func(path string, period, failures int32) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromString(receiverPortName))).
			WithPeriodSeconds(period).
			WithFailureThreshold(failures).
			WithTimeoutSeconds(2)
	}
	resources := corev1ac.ResourceRequirements()
	if len(s.Resources.Requests) > 0 {
		resources.WithRequests(s.Resources.Requests)
	}
	if len(s.Resources.Limits) > 0 {
		resources.WithLimits(s.Resources.Limits)
	}
	container := corev1ac.Container().
		WithName(receiverContainer).
		WithImage(s.Image).
		WithArgs(ReceiverArgs(s)...).
		WithEnv(
			corev1ac.EnvVar().WithName("POD_NAMESPACE").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.namespace"))),
			corev1ac.EnvVar().WithName("POD_NAME").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.name"))),
		).
		WithPorts(
			corev1ac.ContainerPort().WithName(receiverPortName).WithContainerPort(s.Port).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName(receiverMetricsPortName).WithContainerPort(MetricsPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithLivenessProbe(probe("/healthz", 10, 3)).
		WithReadinessProbe(probe("/readyz", 2, 2)).
		WithStartupProbe(probe("/healthz", 1, 30)).
		WithResources(resources).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(SpoolVolume).WithMountPath(SpoolDir),
			corev1ac.VolumeMount().WithName("tmp").WithMountPath(TmpDir),
		).
		WithVolumeMounts(natsCredsMounts(s)...).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))

	pod := corev1ac.PodSpec().
		WithServiceAccountName(s.Name).
		WithAutomountServiceAccountToken(true).
		WithTerminationGracePeriodSeconds(receiverTerminationGrace).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(receiverUID).
			WithRunAsGroup(receiverUID).
			WithFSGroup(receiverUID).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithContainers(container).
		WithVolumes(
			corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource().
				WithSizeLimit(resource.MustParse(receiverTmpSize))),
		).
		WithVolumes(natsCredsVolumes(s)...)
	if s.Stateless {
		// Nothing durable on the pod: the spool mount is scratch space.
		pod.WithVolumes(corev1ac.Volume().WithName(SpoolVolume).WithEmptyDir(corev1ac.EmptyDirVolumeSource().
			WithSizeLimit(resource.MustParse(receiverTmpSize))))
	}

	podLabels := receiverLabels(s)
	podLabels[LabelServing] = ServingValue
	claim := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: s.SpoolSize}))
	if s.StorageClassName != nil {
		claim.WithStorageClassName(*s.StorageClassName)
	}
	spec := appsv1ac.StatefulSetSpec().
		WithReplicas(s.WorkloadReplicas).
		WithServiceName(s.Headless).
		WithPodManagementPolicy(appsv1.ParallelPodManagement).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(ReceiverPodLabels(s))).
		WithUpdateStrategy(appsv1ac.StatefulSetUpdateStrategy().
			WithType(appsv1.RollingUpdateStatefulSetStrategyType)).
		WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
			WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType).
			WithWhenDeleted(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
		WithTemplate(corev1ac.PodTemplateSpec().
			WithLabels(podLabels).
			WithSpec(pod))
	if !s.Stateless {
		spec.WithVolumeClaimTemplates(corev1ac.PersistentVolumeClaim(SpoolVolume, "").
			WithLabels(receiverLabels(s)).
			WithSpec(claim))
	}
	return appsv1ac.StatefulSet(s.Name, s.Receiver.Namespace).
		WithLabels(receiverLabels(s)).WithOwnerReferences(ownerReference(s)).
		WithSpec(spec)
}

// natsCredsMounts and natsCredsVolumes mount spec.spool.jetStream.credentialsSecretRef's
// "creds" key at NATSCredsDir, read-only, when it is set.
func natsCredsMounts(s *ReceiverSettings) []*corev1ac.VolumeMountApplyConfiguration {
	if s.JetStream == nil || s.JetStream.CredentialsSecretRef == nil {
		return nil
	}
	return []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().WithName(natsCredsVolume).WithMountPath(NATSCredsDir).WithReadOnly(true),
	}
}

func natsCredsVolumes(s *ReceiverSettings) []*corev1ac.VolumeApplyConfiguration {
	if s.JetStream == nil || s.JetStream.CredentialsSecretRef == nil {
		return nil
	}
	return []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName(natsCredsVolume).WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(s.JetStream.CredentialsSecretRef.Name).
			WithItems(corev1ac.KeyToPath().WithKey(NATSCredsKey).WithPath(NATSCredsKey)).
			WithDefaultMode(0o440)),
	}
}
