package main

// Events: every observable thing either role does is one JSON line on stdout
// and one entry in a bounded in-memory log that /status aggregates. Tests read
// the lines (the Go TLS error text in particular) and poll /status to assert
// things like "0 failed handshakes since T".

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Event kinds. "listening" is always the first line a process prints.
const (
	evListening = "listening"
	evHandshake = "handshake"
	evConnect   = "connect"
	evBootstrap = "bootstrap"
	evRenewal   = "renewal"
	evReload    = "reload"
	evError     = "error"
)

// Event is one JSON line. Fields beyond the documented ones are omitted when
// empty so lines stay short at 5 connects per second per agent.
type Event struct {
	Time    string `json:"time"`
	Role    string `json:"role"`
	Event   string `json:"event"`
	Cluster string `json:"cluster"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Detail  string `json:"detail,omitempty"`
	Remote  string `json:"remote,omitempty"`
	Addr    string `json:"addr,omitempty"`
	Status  string `json:"status,omitempty"`
}

// logged is what the bounded log keeps of an event: enough to recount.
type logged struct {
	at      time.Time
	kind    string
	cluster string
	ok      bool
	err     string
}

// Counters are the per-cluster numbers /status returns.
type Counters struct {
	HandshakesOK     int    `json:"handshakesOk"`
	HandshakesFailed int    `json:"handshakesFailed"`
	ConnectsOK       int    `json:"connectsOk"`
	ConnectsFailed   int    `json:"connectsFailed"`
	Bootstraps       int    `json:"bootstraps"`
	BootstrapsFailed int    `json:"bootstrapsFailed"`
	Renewals         int    `json:"renewals"`
	RenewalsFailed   int    `json:"renewalsFailed"`
	Reloads          int    `json:"reloads"`
	Errors           int    `json:"errors"`
	LastError        string `json:"lastError,omitempty"`
	LastErrorTime    string `json:"lastErrorTime,omitempty"`
	// LastOK is the time of the last accepted relay connection (connect ok).
	LastOK string `json:"lastOk,omitempty"`

	lastOKAt, lastErrAt time.Time // for sum(); the strings are for JSON
}

func (c *Counters) add(e logged) {
	switch e.kind {
	case evHandshake:
		if e.ok {
			c.HandshakesOK++
		} else {
			c.HandshakesFailed++
		}
	case evConnect:
		if e.ok {
			c.ConnectsOK++
			c.lastOKAt = e.at
			c.LastOK = e.at.Format(time.RFC3339Nano)
		} else {
			c.ConnectsFailed++
		}
	case evBootstrap:
		if e.ok {
			c.Bootstraps++
		} else {
			c.BootstrapsFailed++
		}
	case evRenewal:
		if e.ok {
			c.Renewals++
		} else {
			c.RenewalsFailed++
		}
	case evReload:
		if e.ok {
			c.Reloads++
		}
	case evError:
		c.Errors++
	}
	if !e.ok && e.err != "" {
		c.LastError = e.err
		c.lastErrAt = e.at
		c.LastErrorTime = e.at.Format(time.RFC3339Nano)
	}
}

// maxLogged bounds the event log: at 5 events/s per agent it holds hours.
const maxLogged = 200_000

// Recorder writes events and keeps the counters. One mutex orders both, so
// the stdout lines and the counters always agree.
type Recorder struct {
	role string
	out  io.Writer

	mu      sync.Mutex
	ring    []logged // circular once full
	next    int      // index of the next write once the ring is full
	wrapped bool     // at least one event was dropped from the ring
	totals  map[string]*Counters
}

func newRecorder(role string, out io.Writer) *Recorder {
	return &Recorder{role: role, out: out, totals: map[string]*Counters{}}
}

// Emit records one event. The time is stamped here.
func (r *Recorder) Emit(e Event) {
	now := time.Now()
	e.Time = now.Format(time.RFC3339Nano)
	e.Role = r.role
	line, err := json.Marshal(e)
	if err != nil { // cannot happen for this struct; keep the line anyway
		line = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	line = append(line, '\n')

	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.out.Write(line)
	if e.Event == evListening {
		return
	}
	l := logged{at: now, kind: e.Event, cluster: e.Cluster, ok: e.OK, err: e.Error}
	if len(r.ring) < maxLogged {
		r.ring = append(r.ring, l)
	} else {
		r.ring[r.next] = l
		r.next = (r.next + 1) % maxLogged
		r.wrapped = true
	}
	c := r.totals[e.Cluster]
	if c == nil {
		c = &Counters{}
		r.totals[e.Cluster] = c
	}
	c.add(l)
}

// Fail is a shorthand for a failed event of kind with an error.
func (r *Recorder) Fail(kind, cluster string, err error) {
	r.Emit(Event{Event: kind, Cluster: cluster, OK: false, Error: err.Error()})
}

// StatusReport is the /status body. Events without a cluster (server-wide
// reloads, handshakes of bootstrap connections that carry no client
// certificate, configuration errors) are counted under the key "".
type StatusReport struct {
	Role   string `json:"role"`
	Now    string `json:"now"`
	Since  string `json:"since,omitempty"`
	Oldest string `json:"oldest,omitempty"`
	// Truncated: since is older than the oldest event still in the bounded
	// log, so the counts may miss events.
	Truncated bool                 `json:"truncated"`
	Clusters  map[string]*Counters `json:"clusters"`
	Total     Counters             `json:"total"`
}

// Report counts every event (since zero) or only those strictly after since.
func (r *Recorder) Report(since time.Time) StatusReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := StatusReport{Role: r.role, Now: time.Now().Format(time.RFC3339Nano), Clusters: map[string]*Counters{}}
	// r.next is 0 until the ring wraps, so r.ring[r.next] is always the oldest.
	var oldest time.Time
	if len(r.ring) > 0 {
		oldest = r.ring[r.next].at
		rep.Oldest = oldest.Format(time.RFC3339Nano)
	}
	if since.IsZero() {
		// Lifetime totals survive the ring's bound.
		for name, c := range r.totals {
			cc := *c
			rep.Clusters[name] = &cc
		}
		rep.Total = sum(rep.Clusters)
		return rep
	}
	rep.Since = since.Format(time.RFC3339Nano)
	rep.Truncated = r.wrapped && !since.After(oldest)
	for i := range r.ring {
		l := r.ring[(r.next+i)%len(r.ring)] // oldest first, so "last*" end up newest
		if !l.at.After(since) {
			continue
		}
		c := rep.Clusters[l.cluster]
		if c == nil {
			c = &Counters{}
			rep.Clusters[l.cluster] = c
		}
		c.add(l)
	}
	rep.Total = sum(rep.Clusters)
	return rep
}

func sum(m map[string]*Counters) Counters {
	var t Counters
	for _, c := range m {
		t.HandshakesOK += c.HandshakesOK
		t.HandshakesFailed += c.HandshakesFailed
		t.ConnectsOK += c.ConnectsOK
		t.ConnectsFailed += c.ConnectsFailed
		t.Bootstraps += c.Bootstraps
		t.BootstrapsFailed += c.BootstrapsFailed
		t.Renewals += c.Renewals
		t.RenewalsFailed += c.RenewalsFailed
		t.Reloads += c.Reloads
		t.Errors += c.Errors
		if c.lastOKAt.After(t.lastOKAt) {
			t.lastOKAt, t.LastOK = c.lastOKAt, c.LastOK
		}
		if c.lastErrAt.After(t.lastErrAt) {
			t.lastErrAt, t.LastError, t.LastErrorTime = c.lastErrAt, c.LastError, c.LastErrorTime
		}
	}
	return t
}

// listenStatus binds the status address (port 0 allowed) so the caller can
// print the real address in the "listening" event before serving.
func listenStatus(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	return net.Listen("tcp", addr)
}

// serveStatus serves GET /status[?since=RFC3339Nano] as plain HTTP.
func serveStatus(l net.Listener, rec *Recorder) {
	if l == nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, req *http.Request) {
		var since time.Time
		if s := req.URL.Query().Get("since"); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				http.Error(w, "since: want RFC 3339 time: "+err.Error(), http.StatusBadRequest)
				return
			}
			since = t
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rec.Report(since))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
