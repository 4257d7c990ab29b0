package cli

import "errors"

func init() {
	register("send", "send a sample callback to a receiver and print the answer", runSend)
}

func runSend(args []string) error {
	fs := newFlagSet("send", "[flags]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return errors.New("send: not implemented yet (see the receiver issue)")
}
