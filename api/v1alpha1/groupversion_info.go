// Package v1alpha1 contains the CallbackReceiver, CallbackApp and CallbackRoute API of the callbacks.callback-router.dev group.
// It depends only on k8s.io/apimachinery and k8s.io/api, so that any project can import it.
// +kubebuilder:object:generate=true
// +groupName=callbacks.callback-router.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the callback-router API.
	GroupVersion = schema.GroupVersion{Group: "callbacks.callback-router.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&CallbackReceiver{}, &CallbackReceiverList{},
		&CallbackApp{}, &CallbackAppList{},
		&CallbackRoute{}, &CallbackRouteList{},
		&CallbackReplay{}, &CallbackReplayList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
