package cli

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
)

// TestManagerFlags checks the manager-level flags: everything about a receiver is its
// CallbackReceiver, so these name only namespaces, the default image and the installed
// receivers' ConfigMap.
func TestManagerFlags(t *testing.T) {
	tests := map[string]struct {
		args []string
		// env is POD_NAMESPACE, as in a pod.
		env string
		// want is the resulting options; nil when an error is expected.
		want *controllers.ManagerOptions
		// err is part of the expected error.
		err string
	}{
		"in a pod": {
			args: []string{"--receiver-image", "img:1"}, env: "platform",
			want: &controllers.ManagerOptions{Namespace: "platform", ReceiverNamespaces: []string{"platform"},
				DefaultImage: "img:1", StatusWorkers: controllers.DefaultStatusWorkers,
				DrainSettle: dataplane.DefaultDrainSettle, PendingInterval: dataplane.DefaultPendingInterval},
		},
		"outside a pod": {
			args: []string{"--receiver-image", "img:1"},
			want: &controllers.ManagerOptions{Namespace: controllers.DefaultNamespace, ReceiverNamespaces: []string{controllers.DefaultNamespace},
				DefaultImage: "img:1", StatusWorkers: controllers.DefaultStatusWorkers,
				DrainSettle: dataplane.DefaultDrainSettle, PendingInterval: dataplane.DefaultPendingInterval},
		},
		"several receiver namespaces, installed receivers": {
			args: []string{"--receiver-image", "img:1", "--receiver-namespace", "cr", "--receiver-namespaces", "cr, im-internal,",
				"--installed-receivers", "cr-receivers", "--status-workers", "4", "--receiver-drain-settle", "3s", "--receiver-pending-interval", "5s"},
			want: &controllers.ManagerOptions{Namespace: "cr", ReceiverNamespaces: []string{"cr", "im-internal"},
				DefaultImage: "img:1", InstalledReceivers: "cr-receivers", StatusWorkers: 4, DrainSettle: 3 * time.Second, PendingInterval: 5 * time.Second},
		},
		"no image":               {args: nil, err: "receiver image is empty"},
		"bad receiver namespace": {args: []string{"--receiver-image", "i", "--receiver-namespaces", "Team_A"}, err: `receiver namespace "Team_A"`},
		"bad ConfigMap name":     {args: []string{"--receiver-image", "i", "--installed-receivers", "No Such"}, err: "installed-receivers ConfigMap"},
		"negative workers":       {args: []string{"--receiver-image", "i", "--status-workers", "-1"}, err: "status workers -1"},
		"negative drain settle":  {args: []string{"--receiver-image", "i", "--receiver-drain-settle", "-1s"}, err: "drain settle -1s is negative"},
		"negative pending interval": {args: []string{"--receiver-image", "i", "--receiver-pending-interval", "-1s"},
			err: "pending interval -1s is negative"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			t.Setenv("POD_NAMESPACE", tc.env)
			t.Setenv("RECEIVER_IMAGE", "")
			fs := newFlagSet("manager", "[flags]")
			f := &managerFlags{}
			f.bind(fs)
			g.Expect(fs.Parse(tc.args)).To(Succeed())
			o, err := f.options()
			if tc.err != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.err)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(o).To(Equal(*tc.want))
		})
	}
}
