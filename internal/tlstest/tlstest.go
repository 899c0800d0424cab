// Package tlstest makes throw-away TLS material in memory for tests: a certificate authority, server
// certificates for loopback and any other addresses a test listens on, and client certificates for mutual
// TLS. Nothing touches the disk; the PEM forms are there for tools and servers that want files or bytes.
// Keys are ECDSA P-256: cheap to make, accepted by TLS 1.3, QUIC and gRPC alike.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// validity is how long every certificate lasts, starting an hour back so that a peer whose clock lags a
// little still accepts it.
const validity = 24 * time.Hour

// CA is a certificate authority that signs the server and client certificates of one test.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Pool    *x509.CertPool // holds Cert only: the roots a client trusts, or the client CAs a server accepts
	key     *ecdsa.PrivateKey
}

// Pair is one signed certificate with its key, as tls.Config wants it and as PEM.
type Pair struct {
	TLS     tls.Certificate // its Leaf is set
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	tmpl, err := template(name)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign ca certificate %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate %q: %w", name, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), Pool: pool, key: key}, nil
}

// Server signs a server certificate valid for localhost, 127.0.0.1, ::1 and ips (the addresses a test
// listens on outside loopback, such as a veth inside a network namespace).
func (ca *CA) Server(ips ...net.IP) (*Pair, error) {
	tmpl, err := template("flowlens test server")
	if err != nil {
		return nil, err
	}
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return ca.sign(tmpl)
}

// Client signs a client certificate whose common name is identity (for flowlens, the exporter id that
// mutual TLS vouches for).
func (ca *CA) Client(identity string) (*Pair, error) {
	tmpl, err := template(identity)
	if err != nil {
		return nil, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.sign(tmpl)
}

// ServerConfig is a TLS 1.3 server configuration presenting p that checks client certificates against
// this CA as auth says (tls.NoClientCert, tls.RequireAndVerifyClientCert, ...). It sets no NextProtos:
// net/http and quic-go's http3 add their own ALPN values to a clone. Each call returns a new Config.
func (ca *CA) ServerConfig(p *Pair, auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13, // QUIC requires 1.3; the TCP path has no reason to accept less
		Certificates: []tls.Certificate{p.TLS},
		ClientCAs:    ca.Pool,
		ClientAuth:   auth,
	}
}

// ClientConfig is a TLS 1.3 client configuration that trusts this CA and presents p, or no certificate
// when p is nil. Each call returns a new Config.
func (ca *CA) ClientConfig(p *Pair) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool}
	if p != nil {
		c.Certificates = []tls.Certificate{p.TLS}
	}
	return c
}

func (ca *CA) sign(tmpl *x509.Certificate) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("key for %q: %w", tmpl.Subject.CommonName, err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key for %q: %w", tmpl.Subject.CommonName, err)
	}
	return &Pair{
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		CertPEM: pemBlock("CERTIFICATE", der),
		KeyPEM:  pemBlock("PRIVATE KEY", keyDER),
	}, nil
}

// template starts a certificate named name with a random serial number.
func template(name string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number for %q: %w", name, err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"flowlens tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
	}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
