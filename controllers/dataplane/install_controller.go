package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// The installed-receivers ConfigMap.
const (
	// InstalledReceiversKey is the ConfigMap key holding the CallbackReceiver manifests
	// (multi-document YAML).
	InstalledReceiversKey = "receivers.yaml"
	// LabelInstalledBy marks the CallbackReceivers applied from a ConfigMap, with its name;
	// the ones no longer in the ConfigMap are deleted by it.
	LabelInstalledBy = "callbacks.callback-router.dev/installed-by"
	// InstallFieldOwner is the server-side apply field manager of installed receivers.
	// It owns only the fields the manifests set: leaving spec.replicas out leaves it to
	// an autoscaler.
	InstallFieldOwner = "callback-router-install"
	// EventInvalidReceivers: the ConfigMap's manifests cannot be read; nothing was changed.
	EventInvalidReceivers = "InvalidReceivers"
)

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers,verbs=create;update;patch;delete

// InstallReconciler applies the CallbackReceivers an installation declares. Helm cannot
// create an object of a kind whose CRD the same release installs (it maps every object
// before creating any), so the chart renders its receivers into a ConfigMap instead, and
// the manager applies them: each CallbackReceiver in the ConfigMap is server-side
// applied in the ConfigMap's namespace with the ConfigMap as owner and the
// LabelInstalledBy label, and the labelled ones that left the ConfigMap (a renamed
// receiver) are deleted. Uninstalling deletes the ConfigMap, and the garbage collector
// the receivers it owned, and their objects in turn.
type InstallReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// Namespace and Name name the ConfigMap.
	Namespace, Name string
	// Recorder emits Warning events on the ConfigMap; nil for none.
	Recorder events.EventRecorder
}

// Reconcile applies the ConfigMap's receivers and deletes the ones it no longer holds.
func (r *InstallReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	cm := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.Name}, cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("reading ConfigMap %s/%s: %w", r.Namespace, r.Name, err)
	}
	var want []*unstructured.Unstructured
	if err == nil {
		want, err = ParseInstalledReceivers(cm.Data[InstalledReceiversKey])
		if err != nil {
			// Terminal until the ConfigMap changes; keep what runs rather than prune it.
			if r.Recorder != nil {
				r.Recorder.Eventf(cm, nil, corev1.EventTypeWarning, EventInvalidReceivers, "Install", "%s", err.Error())
			}
			log.Error(err, "Ignored invalid installed receivers", "configMap", klog.KObj(cm))
			return ctrl.Result{}, nil
		}
	}
	keep := map[string]bool{}
	for _, u := range want {
		u.SetNamespace(r.Namespace)
		l := u.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l[LabelInstalledBy] = r.Name
		u.SetLabels(l)
		u.SetOwnerReferences([]metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID,
		}})
		if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
			client.FieldOwner(InstallFieldOwner), client.ForceOwnership); err != nil {
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				if r.Recorder != nil {
					r.Recorder.Eventf(cm, nil, corev1.EventTypeWarning, EventInvalidReceivers, "Install",
						"CallbackReceiver %s refused: %v", u.GetName(), err)
				}
				keep[u.GetName()] = true // never prune a receiver because its new spec is invalid
				continue
			}
			return ctrl.Result{}, fmt.Errorf("applying CallbackReceiver %s/%s: %w", r.Namespace, u.GetName(), err)
		}
		keep[u.GetName()] = true
	}

	installed := &v1alpha1.CallbackReceiverList{}
	if err := r.Client.List(ctx, installed, client.InNamespace(r.Namespace), client.MatchingLabels{LabelInstalledBy: r.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing installed CallbackReceivers: %w", err)
	}
	for i := range installed.Items {
		recv := &installed.Items[i]
		if keep[recv.Name] {
			continue
		}
		if err := r.Client.Delete(ctx, recv, client.Preconditions{UID: &recv.UID}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("deleting CallbackReceiver %s/%s, no longer installed: %w", recv.Namespace, recv.Name, err)
		}
		log.Info("Deleted CallbackReceiver no longer installed", "receiver", klog.KObj(recv))
	}
	return ctrl.Result{RequeueAfter: ReceiverResync}, nil
}

// ParseInstalledReceivers reads a multi-document YAML of CallbackReceivers. Every
// document must be a CallbackReceiver of this API version whose fields are all known
// (a typo is an error, not a silently dropped setting), without a namespace other than
// the ConfigMap's (set by the caller) and without status. Names must be unique.
func ParseInstalledReceivers(data string) ([]*unstructured.Unstructured, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(data)), 4096)
	var out []*unstructured.Unstructured
	seen := map[string]bool{}
	for i := 1; ; i++ {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s document %d: %w", InstalledReceiversKey, i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetAPIVersion() != v1alpha1.GroupVersion.String() || u.GetKind() != "CallbackReceiver" {
			return nil, fmt.Errorf("%s document %d is a %s %s, not a %s CallbackReceiver",
				InstalledReceiversKey, i, u.GetAPIVersion(), u.GetKind(), v1alpha1.GroupVersion)
		}
		raw, err := yaml.Marshal(u.Object)
		if err != nil {
			return nil, err
		}
		var typed v1alpha1.CallbackReceiver
		if err := yaml.UnmarshalStrict(raw, &typed); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", InstalledReceiversKey, i, err)
		}
		switch name := u.GetName(); {
		case name == "":
			return nil, fmt.Errorf("%s document %d has no metadata.name", InstalledReceiversKey, i)
		case seen[name]:
			return nil, fmt.Errorf("%s: CallbackReceiver %s appears twice", InstalledReceiversKey, name)
		default:
			seen[name] = true
		}
		delete(u.Object, "status")
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

// SetupWithManager registers the reconciler: the ConfigMap, and spec or label changes of
// the receivers it installed (drift is restored, a deleted one re-created), enqueue its
// single request.
func (r *InstallReconciler) SetupWithManager(mgr ctrl.Manager) error {
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.Name}}
	isConfigMap := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetName() == r.Name
	})
	toConfigMap := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if o.GetNamespace() == r.Namespace && o.GetLabels()[LabelInstalledBy] == r.Name {
			return []reconcile.Request{req}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("install").
		For(&corev1.ConfigMap{}, builder.WithPredicates(isConfigMap)).
		Watches(&v1alpha1.CallbackReceiver{}, toConfigMap,
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Complete(r)
}
