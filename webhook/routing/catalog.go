package routing

import (
	"fmt"
	"strings"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/catalog"
)

// What the command catalogue (webhook/catalog) adds to compiling a route, once its app,
// and so its provider, is known:
//
//   - the selectors @before and @after in a route's commands and in an app's
//     allowedRoutes commands stand for every before- (after-) callback of the provider;
//     they are expanded into exact names before the route is admitted and compiled;
//   - commands the provider is not known to send are reported (UnknownCommands, with a
//     did-you-mean), never refused: platforms add commands;
//   - a Sync route on commands known to be after-callbacks is warned about (the
//     platform ignores their answer).

// expandGrants expands the selectors of an app's allowedRoutes commands.
func expandGrants(p v1alpha1.Provider, grants []grant) {
	for i := range grants {
		if hasSelector(grants[i].commands) {
			grants[i].commands = catalog.Expand(p, grants[i].commands)
		}
	}
}

// withExpandedCommands returns the route with its selectors expanded (a shallow copy
// whose Spec.Commands is new), or the route itself when it has none.
func withExpandedCommands(r *v1alpha1.CallbackRoute, p v1alpha1.Provider) *v1alpha1.CallbackRoute {
	if !hasSelector(r.Spec.Commands) {
		return r
	}
	x := *r
	x.Spec.Commands = catalog.Expand(p, r.Spec.Commands)
	return &x
}

func hasSelector(cmds []string) bool {
	for _, c := range cmds {
		if catalog.IsSelector(c) {
			return true
		}
	}
	return false
}

// commandsKnown is the UnknownCommands=False message per provider, built once: the
// compiler checks every route on every pass, and a route whose commands are all known
// must cost no allocation.
var commandsKnown = map[v1alpha1.Provider]string{
	v1alpha1.ProviderTencentIM: "Every command is one TencentIM is known to send",
	v1alpha1.ProviderOpenIM:    "Every command is one OpenIM is known to send",
}

// checkCommands is the catalogue's verdict on a route's commands (as written): the
// UnknownCommands condition, and the warnings to add to its Accepted message and send as
// Warning events.
func checkCommands(p v1alpha1.Provider, r *v1alpha1.CallbackRoute) (unknown Cond, warnings []Cond) {
	if u := catalog.FindUnknown(p, r.Spec.Commands); len(u) > 0 {
		names := make([]string, len(u))
		for i := range u {
			names[i] = u[i].String()
		}
		unknown = Cond{True: true, Reason: v1alpha1.ReasonUnknownCommands, Message: fmt.Sprintf(
			"%s is not known to send %s; the route still routes them if they come (see callback-router send --list)",
			p, strings.Join(names, ", "))}
	} else {
		unknown = Cond{Reason: v1alpha1.ReasonCommandsKnown, Message: commandsKnown[p]}
	}
	if r.Spec.EffectiveMode() == v1alpha1.ModeSync {
		if after := catalog.AfterOnly(p, r.Spec.Commands); len(after) > 0 {
			warnings = append(warnings, Cond{Reason: v1alpha1.ReasonSyncOnAfterCallback, Message: fmt.Sprintf(
				"mode Sync on %s, which %s sends as after-callbacks: it ignores the answer and only waits for it; use mode Async",
				strings.Join(after, ", "), p)})
		}
	}
	return unknown, warnings
}
