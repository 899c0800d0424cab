package tlstest

import (
	"crypto/tls"
	"net"
	"testing"
)

// handshake runs a TLS handshake over loopback TCP (buffered, unlike net.Pipe, so the server's session
// tickets do not block the client) and returns the client's and the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer s.Close()
		ts := tls.Server(s, server)
		if err = ts.Handshake(); err == nil {
			// A TLS 1.3 client finishes before the server has checked its certificate: the server's
			// verdict reaches the client on its next read.
			_, err = ts.Write([]byte{1})
		}
		srvErr <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	if clientErr = tc.Handshake(); clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 1))
	}
	return clientErr, <-srvErr
}

func TestMutualTLS(t *testing.T) {
	ca, err := NewCA("test ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server(net.ParseIP("10.199.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("exp-1")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Client("exp-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "10.199.8.1"} {
		if err := srv.TLS.Leaf.VerifyHostname(host); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	if _, err := tls.X509KeyPair(cli.CertPEM, cli.KeyPEM); err != nil {
		t.Errorf("client PEM: %v", err)
	}

	withName := func(c *tls.Config) *tls.Config { c.ServerName = "127.0.0.1"; return c }
	for _, tc := range []struct {
		name   string
		server *tls.Config
		client *tls.Config
		ok     bool
	}{
		{"server auth only", ca.ServerConfig(srv, tls.NoClientCert), withName(ca.ClientConfig(nil)), true},
		{"mutual", ca.ServerConfig(srv, tls.RequireAndVerifyClientCert), withName(ca.ClientConfig(cli)), true},
		{"no client certificate", ca.ServerConfig(srv, tls.RequireAndVerifyClientCert), withName(ca.ClientConfig(nil)), false},
		{"client of another ca", ca.ServerConfig(srv, tls.RequireAndVerifyClientCert), withName(ca.ClientConfig(stranger)), false},
		{"server of another ca", ca.ServerConfig(srv, tls.NoClientCert), withName(other.ClientConfig(nil)), false},
	} {
		cerr, serr := handshake(t, tc.server, tc.client)
		if ok := cerr == nil && serr == nil; ok != tc.ok {
			t.Errorf("%s: client %v, server %v; want success %v", tc.name, cerr, serr, tc.ok)
		}
	}
}
