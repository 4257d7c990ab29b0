// Command callback-router is the operator (manager), the data plane (receiver) and a
// developer tool (send) in one binary, so that one container image serves both Deployments.
package main

import (
	"fmt"
	"os"

	"github.com/callback-router/callback-router/internal/cli"
)

func main() {
	if err := cli.Run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "callback-router:", err)
		os.Exit(1)
	}
}
