package cli

import "errors"

func init() {
	register("receiver", "run the data plane: verify, route and deliver IM callbacks", runReceiver)
}

func runReceiver(args []string) error {
	fs := newFlagSet("receiver", "[--routes FILE] [--listen :8080] [--metrics-listen ADDR] [--spool-dir DIR]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return errors.New("receiver: not implemented yet (see the receiver issue)")
}
