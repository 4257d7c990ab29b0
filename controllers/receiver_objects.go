package controllers

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
)

// Fixed settings of the receiver pods. They are constants rather than flags because the
// receiver's own behaviour depends on them (probe paths, graceful shutdown).
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
	// receiverMetricsPortName names the metrics port in the pod and the metrics Service.
	receiverMetricsPortName = "metrics"
	// ComponentReceiverMetrics is the component label of the receiver's metrics Service,
	// which the chart's ServiceMonitor selects.
	ComponentReceiverMetrics = "receiver-metrics"
)

// ReceiverMetricsServiceName is the name of the receiver's metrics Service.
func ReceiverMetricsServiceName(o *ReceiverOptions) string { return o.Name + "-metrics" }

// ReceiverPodLabels are the labels on the receiver's pods, and the Deployment and Service
// selector. HPA, PDB, NetworkPolicy and ServiceMonitor select on these.
func ReceiverPodLabels(o *ReceiverOptions) map[string]string {
	return map[string]string{LabelName: o.Name, LabelComponent: ComponentReceiver}
}

// receiverLabels are the labels on every object the receiver reconciler owns.
func receiverLabels(o *ReceiverOptions) map[string]string {
	l := ReceiverPodLabels(o)
	l[LabelManagedBy] = ManagedByValue
	l[LabelPartOf] = ManagedByValue
	return l
}

// ReceiverArgs are the receiver container's arguments: in-cluster mode reading the table
// Secrets named after the receiver.
func ReceiverArgs(o *ReceiverOptions) []string {
	args := []string{
		"receiver",
		"--listen", ":" + strconv.Itoa(int(o.Port)),
		// Always on a port of its own: /metrics names apps and routes, and the callback
		// port may be public (a LoadBalancer Service, an Ingress).
		"--metrics-listen", ":" + strconv.Itoa(int(o.MetricsPort)),
		"--spool-dir", ReceiverSpoolDir,
		"--namespace", o.Namespace,
		"--table", o.Name,
	}
	if len(o.TrustedProxies) > 0 {
		args = append(args, "--trusted-proxies", strings.Join(o.TrustedProxies, ","))
	}
	if o.OpenIMTimeout > 0 {
		args = append(args, "--openim-timeout", o.OpenIMTimeout.String())
	}
	return args
}

// DesiredServiceAccount is the receiver's identity.
func DesiredServiceAccount(o *ReceiverOptions) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(o.Name, o.Namespace).WithLabels(receiverLabels(o))
}

// DesiredRole lets the receiver read Secrets in its own namespace only: it watches the
// table Secrets by label. list and watch cannot be narrowed by resourceNames for a
// label-selected set, so the receiver namespace should hold nothing else secret.
func DesiredRole(o *ReceiverOptions) *rbacv1ac.RoleApplyConfiguration {
	return rbacv1ac.Role(o.Name, o.Namespace).WithLabels(receiverLabels(o)).
		WithRules(rbacv1ac.PolicyRule().
			WithAPIGroups("").
			WithResources("secrets").
			WithVerbs("get", "list", "watch"))
}

// DesiredRoleBinding binds DesiredRole to DesiredServiceAccount.
func DesiredRoleBinding(o *ReceiverOptions) *rbacv1ac.RoleBindingApplyConfiguration {
	return rbacv1ac.RoleBinding(o.Name, o.Namespace).WithLabels(receiverLabels(o)).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(o.Name)).
		WithSubjects(rbacv1ac.Subject().WithKind(rbacv1.ServiceAccountKind).WithName(o.Name).WithNamespace(o.Namespace))
}

// DesiredMetricsService exposes the receiver's metrics port inside the cluster only
// (ClusterIP, whatever the callback Service's type), for Prometheus' ServiceMonitor.
func DesiredMetricsService(o *ReceiverOptions) *corev1ac.ServiceApplyConfiguration {
	labels := receiverLabels(o)
	labels[LabelComponent] = ComponentReceiverMetrics
	return corev1ac.Service(ReceiverMetricsServiceName(o), o.Namespace).WithLabels(labels).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(ReceiverPodLabels(o)).
			WithPorts(corev1ac.ServicePort().
				WithName(receiverMetricsPortName).
				WithProtocol(corev1.ProtocolTCP).
				WithPort(o.MetricsPort).
				WithTargetPort(intstr.FromString(receiverMetricsPortName))))
}

// DesiredService exposes the receiver's callback port (callbacks and health probes; the
// metrics are on DesiredMetricsService).
func DesiredService(o *ReceiverOptions) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(o.Name, o.Namespace).WithLabels(receiverLabels(o)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(o.ServiceType).
			WithSelector(ReceiverPodLabels(o)).
			WithPorts(corev1ac.ServicePort().
				WithName(receiverPortName).
				WithProtocol(corev1.ProtocolTCP).
				WithPort(o.Port).
				WithTargetPort(intstr.FromString(receiverPortName))))
}

// resourceList turns the non-empty quantities into a ResourceList. Validate has parsed them.
func resourceList(cpu, memory string) corev1.ResourceList {
	rl := corev1.ResourceList{}
	if cpu != "" {
		rl[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if memory != "" {
		rl[corev1.ResourceMemory] = resource.MustParse(memory)
	}
	return rl
}

// DesiredDeployment runs the receiver in in-cluster mode with a restricted security
// context, probes, a spool volume and resource requests. spec.replicas is omitted when
// ManageReplicas is false, so server-side apply leaves it to the autoscaler.
func DesiredDeployment(o *ReceiverOptions) *appsv1ac.DeploymentApplyConfiguration {
	probe := func(path string, period, failures int32) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromString(receiverPortName))).
			WithPeriodSeconds(period).
			WithFailureThreshold(failures).
			WithTimeoutSeconds(2)
	}
	resources := corev1ac.ResourceRequirements()
	if rl := resourceList(o.CPURequest, o.MemoryRequest); len(rl) > 0 {
		resources.WithRequests(rl)
	}
	if rl := resourceList(o.CPULimit, o.MemoryLimit); len(rl) > 0 {
		resources.WithLimits(rl)
	}
	spool := corev1ac.EmptyDirVolumeSource()
	if o.SpoolSize != "" {
		spool.WithSizeLimit(resource.MustParse(o.SpoolSize))
	}
	container := corev1ac.Container().
		WithName(receiverContainer).
		WithImage(o.Image).
		WithArgs(ReceiverArgs(o)...).
		WithEnv(
			corev1ac.EnvVar().WithName("POD_NAMESPACE").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.namespace"))),
			corev1ac.EnvVar().WithName("POD_NAME").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.name"))),
		).
		WithPorts(
			corev1ac.ContainerPort().WithName(receiverPortName).WithContainerPort(o.Port).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName(receiverMetricsPortName).WithContainerPort(o.MetricsPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithLivenessProbe(probe("/healthz", 10, 3)).
		WithReadinessProbe(probe("/readyz", 2, 2)).
		WithStartupProbe(probe("/healthz", 1, 30)).
		WithResources(resources).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("spool").WithMountPath(ReceiverSpoolDir),
			corev1ac.VolumeMount().WithName("tmp").WithMountPath(ReceiverTmpDir),
		).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))

	pod := corev1ac.PodSpec().
		WithServiceAccountName(o.Name).
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
			corev1ac.Volume().WithName("spool").WithEmptyDir(spool),
			corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource().
				WithSizeLimit(resource.MustParse(receiverTmpSize))),
		)

	spec := appsv1ac.DeploymentSpec().
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(ReceiverPodLabels(o))).
		WithStrategy(appsv1ac.DeploymentStrategy().
			WithType(appsv1.RollingUpdateDeploymentStrategyType).
			WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
				WithMaxUnavailable(intstr.FromInt32(0)).
				WithMaxSurge(intstr.FromInt32(1)))).
		WithTemplate(corev1ac.PodTemplateSpec().
			WithLabels(receiverLabels(o)).
			WithSpec(pod))
	if o.ManageReplicas {
		spec.WithReplicas(o.Replicas)
	}
	return appsv1ac.Deployment(o.Name, o.Namespace).WithLabels(receiverLabels(o)).WithSpec(spec)
}
