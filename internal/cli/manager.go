package cli

import "errors"

func init() {
	register("manager", "run the operator: reconcile CallbackRoutes into the routing table and the receiver", runManager)
}

func runManager(args []string) error {
	fs := newFlagSet("manager", "[flags]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return errors.New("manager: not implemented yet (see the controller issue)")
}
