package capture

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/nettest"
)

func TestSmoke(t *testing.T) {
	nettest.RequirePrivileged(t)
	ns := nettest.NewNetns(t)
	p, err := Open(Options{Netns: ns.Inode}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var ln net.Listener
	ns.Do(t, func() { ln, _ = net.Listen("tcp", "127.0.0.1:0") })
	go func() {
		c, _ := ln.Accept()
		io.Copy(c, c)
		c.Close()
	}()
	var c net.Conn
	ns.Do(t, func() { c, err = net.Dial("tcp", ln.Addr().String()) })
	c.Write(make([]byte, 1000))
	io.ReadFull(c, make([]byte, 1000))
	c.Close()
	for i := 0; i < 2; i++ {
		var ev Event
		if err := p.Read(&ev, time.Now().Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d %x %+v", ev.Kind, ev.Sock, ev.Record)
	}
}
