// Package natstest runs real NATS servers (github.com/nats-io/nats-server/v2) with
// JetStream on loopback for tests and benchmarks: one server or a cluster, file storage
// in the caller's directories, every write synced (sync_interval: always), either in the
// calling process or, where a test must kill -9 a server, each in a child process (the
// test binary itself, re-executed; call RunChildIfAsked first thing in TestMain).
package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// childEnv carries a child's Config as JSON.
const childEnv = "CALLBACK_ROUTER_NATSTEST_SERVER"

// ReadyTimeout bounds waiting for a server to accept connections, and for a cluster's
// JetStream to answer.
const ReadyTimeout = 30 * time.Second

// Config is one server's settings.
type Config struct {
	Name        string
	Dir         string
	Port        int
	ClusterPort int
	// Routes are the other servers' cluster addresses (host:port); empty: no cluster.
	Routes []string
	// User and Password, when set, are required of clients.
	User, Password string
}

func (c Config) options() *server.Options {
	o := &server.Options{
		ServerName: c.Name,
		Host:       "127.0.0.1",
		Port:       c.Port,
		JetStream:  true,
		StoreDir:   c.Dir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
	}
	if len(c.Routes) > 0 {
		o.Cluster = server.ClusterOpts{Name: "callback-router-test", Host: "127.0.0.1", Port: c.ClusterPort}
		rs := make([]string, 0, len(c.Routes))
		for _, r := range c.Routes {
			rs = append(rs, "nats://"+r)
		}
		o.Routes = server.RoutesFromStr(strings.Join(rs, ","))
	}
	if c.User != "" {
		o.Users = []*server.User{{Username: c.User, Password: c.Password}}
	}
	return o
}

// RunChildIfAsked runs a server and never returns when this process was started as a
// child by StartProcesses; otherwise it returns at once.
func RunChildIfAsked() {
	v := os.Getenv(childEnv)
	if v == "" {
		return
	}
	var c Config
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		fmt.Fprintln(os.Stderr, "natstest child:", err)
		os.Exit(2)
	}
	s, err := server.NewServer(c.options())
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstest child:", err)
		os.Exit(2)
	}
	s.Start()
	s.WaitForShutdown()
	os.Exit(0)
}

// Server is one running server.
type Server struct {
	Config
	srv *server.Server
	cmd *exec.Cmd
}

// URL is the server's client URL.
func (s *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.Port) }

// Cluster is a set of servers.
type Cluster struct {
	Servers []*Server
	user    string
	pass    string
}

// URL lists every server, as --spool-url takes them, with the credentials if any.
func (c *Cluster) URL() string {
	us := make([]string, 0, len(c.Servers))
	for _, s := range c.Servers {
		u := s.URL()
		if c.user != "" {
			u = fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", c.user, c.pass, s.Port)
		}
		us = append(us, u)
	}
	return strings.Join(us, ",")
}

// FreePort returns a loopback port nothing listens on.
func FreePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func configs(n int, dir, user, pass string) ([]Config, error) {
	cs := make([]Config, n)
	for i := range cs {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		cp, err := FreePort()
		if err != nil {
			return nil, err
		}
		cs[i] = Config{Name: fmt.Sprintf("n%d", i+1), Dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), Port: p, ClusterPort: cp, User: user, Password: pass}
	}
	if n > 1 {
		for i := range cs {
			for j := range cs {
				if i != j {
					cs[i].Routes = append(cs[i].Routes, "127.0.0.1:"+strconv.Itoa(cs[j].ClusterPort))
				}
			}
		}
	}
	return cs, nil
}

// Start runs n servers (a cluster when n > 1) in this process, with data under dir.
// user, if not empty, is required of clients with pass.
func Start(n int, dir, user, pass string) (*Cluster, error) {
	cs, err := configs(n, dir, user, pass)
	if err != nil {
		return nil, err
	}
	c := &Cluster{user: user, pass: pass}
	for _, cfg := range cs {
		srv, err := server.NewServer(cfg.options())
		if err != nil {
			c.Stop()
			return nil, err
		}
		srv.Start()
		c.Servers = append(c.Servers, &Server{Config: cfg, srv: srv})
	}
	for _, s := range c.Servers {
		if !s.srv.ReadyForConnections(ReadyTimeout) {
			c.Stop()
			return nil, fmt.Errorf("NATS server %s not ready after %s", s.Name, ReadyTimeout)
		}
	}
	return c, c.WaitJetStream()
}

// StartProcesses runs n servers, each in a child process of exe (normally
// os.Args[0], whose TestMain calls RunChildIfAsked), so that one can be killed -9.
func StartProcesses(exe string, n int, dir string) (*Cluster, error) {
	cs, err := configs(n, dir, "", "")
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	for _, cfg := range cs {
		s := &Server{Config: cfg}
		if err := s.startProcess(exe); err != nil {
			c.Stop()
			return nil, err
		}
		c.Servers = append(c.Servers, s)
	}
	return c, c.WaitJetStream()
}

func (s *Server) startProcess(exe string) error {
	b, err := json.Marshal(s.Config) //nolint:gosec // test servers' own throwaway password, passed to a child process

	if err != nil {
		return err
	}
	s.cmd = exec.CommandContext(context.Background(), exe) // lives until Kill or Stop
	s.cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	return s.cmd.Start()
}

// Kill sends SIGKILL to a server run by StartProcesses and waits for it to die.
func (s *Server) Kill() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("natstest: Kill needs a server run by StartProcesses")
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = s.cmd.Wait()
	s.cmd = nil
	return nil
}

// Restart starts a killed server again on its own ports and directory.
func (s *Server) Restart(exe string) error { return s.startProcess(exe) }

// Stop shuts every server down (in-process) or kills it (child).
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		if s.srv != nil {
			s.srv.Shutdown()
			s.srv.WaitForShutdown()
		}
		if s.cmd != nil {
			_ = s.Kill()
		}
	}
}

// WaitJetStream waits until JetStream answers through any server (a cluster has
// elected its meta leader).
func (c *Cluster) WaitJetStream() error {
	deadline := time.Now().Add(ReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		last = c.pingJetStream()
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Stop()
	return fmt.Errorf("JetStream not available after %s: %w", ReadyTimeout, last)
}

func (c *Cluster) pingJetStream() error {
	opts := []nats.Option{nats.Timeout(time.Second)}
	if c.user != "" {
		opts = append(opts, nats.UserInfo(c.user, c.pass))
	}
	urls := make([]string, 0, len(c.Servers))
	for _, s := range c.Servers {
		urls = append(urls, s.URL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}
