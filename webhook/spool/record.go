package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

// The spool stores three kinds of records in three bbolt buckets:
//
//	callbacks: seq                 -> callback record (the payload, stored once)
//	pending:   seq + target index  -> delivery record (one per Async route, small)
//	dead:      seq + target index  -> delivery record with the dead-letter fields set
//
// seq is a big-endian uint64, so keys sort in acknowledgement order and all the
// deliveries of one callback share a key prefix. Records are a version byte followed by
// uvarint-length-prefixed fields: a fixed, tiny layout that needs no schema library and
// decodes without reflection on the delivery path.

// Record versions. A record with an unknown version is an error, never guessed at.
const (
	callbackRecordV1 = 1
	// callbackRecordV2 is V1 followed by the callback's OperationID. A callback without
	// one is still written as V1, so a spool stays readable by a receiver of an earlier
	// version unless it holds OpenIM callbacks with an operationID.
	callbackRecordV2 = 2
	// callbackRecordV3 is V2 followed by the callback's W3C traceparent (tracing).
	callbackRecordV3 = 3
	deliveryRecordV1 = 1
	// deliveryRecordV2 adds a flags field at the end (deliveryForwardSignature). A
	// delivery without flags is still written as V1, so a receiver that predates V2 can
	// read what it is rolled back to in the common case.
	deliveryRecordV2 = 2
	// deliveryRecordV3 adds, after the flags, the conversation key of an ordered delivery
	// and the route's delivery limits (maxConcurrency, maxPerSecond). Written only when
	// one of them is set, so unordered, unlimited routes keep the older layouts.
	deliveryRecordV3 = 3
)

// Flags of a V2 or V3 delivery record.
const (
	deliveryForwardSignature = 1 << 0
	// deliveryOrdered: the route orders its copies by OrderKey (V3).
	deliveryOrdered = 1 << 1
	// deliveryReplay marks a redriven or replayed delivery (Target.Replay).
	deliveryReplay = 1 << 2
)

// keyLen is the length of a pending or dead key: seq (8 bytes) + target index (2 bytes).
const keyLen = 10

// errCorrupt is returned for a record that cannot be decoded.
var errCorrupt = errors.New("corrupt spool record")

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

func deliveryKey(seq uint64, idx uint16) []byte {
	k := make([]byte, keyLen)
	binary.BigEndian.PutUint64(k, seq)
	binary.BigEndian.PutUint16(k[8:], idx)
	return k
}

func parseDeliveryKey(k []byte) (seq uint64, idx uint16, ok bool) {
	if len(k) != keyLen {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k), binary.BigEndian.Uint16(k[8:]), true
}

// delivery is one callback's delivery to one route, as stored in the pending and dead buckets.
type delivery struct {
	Target callback.Target
	// Attempts is the number of attempts made so far.
	Attempts int
	// NextAt is when the next attempt is due.
	NextAt time.Time
	// DeadAt is when the delivery was dead-lettered (zero while pending).
	DeadAt time.Time
	// LastError says why the last attempt failed.
	LastError string
	// OrderKey is the callback's conversation when Target.Ordered ("" for a callback
	// without one: delivered unordered).
	OrderKey string
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendInt(b []byte, v int64) []byte {
	return binary.AppendVarint(b, v)
}

func encodeCallback(cb *callback.Callback) []byte {
	b := make([]byte, 0, 64+len(cb.ID)+len(cb.AppID)+len(cb.Command)+len(cb.RawQuery)+len(cb.Body)+len(cb.OperationID)+len(cb.TraceParent))
	version := byte(callbackRecordV1)
	if cb.OperationID != "" {
		version = callbackRecordV2
	}
	if cb.TraceParent != "" {
		version = callbackRecordV3
	}
	b = append(b, version)
	b = appendString(b, cb.ID)
	b = appendString(b, string(cb.Provider))
	b = appendString(b, cb.AppID)
	b = appendString(b, cb.Command)
	b = appendString(b, cb.RawQuery)
	b = appendInt(b, timeNano(cb.ReceivedAt))
	b = binary.AppendUvarint(b, uint64(len(cb.Body)))
	b = append(b, cb.Body...)
	if version >= callbackRecordV2 {
		b = appendString(b, cb.OperationID)
	}
	if version >= callbackRecordV3 {
		b = appendString(b, cb.TraceParent)
	}
	return b
}

func encodeDelivery(d *delivery) []byte {
	t := &d.Target
	b := make([]byte, 0, 64+len(t.Route)+len(t.URL)+len(d.LastError))
	var flags uint64
	if t.ForwardSignature {
		flags |= deliveryForwardSignature
	}
	if t.Ordered {
		flags |= deliveryOrdered
	}
	if t.Replay {
		flags |= deliveryReplay
	}
	version := byte(deliveryRecordV1)
	switch {
	case t.Ordered || d.OrderKey != "" || t.MaxConcurrency != 0 || t.MaxPerSecond != 0:
		version = deliveryRecordV3
	case flags != 0:
		version = deliveryRecordV2
	}
	b = append(b, version)
	b = appendString(b, t.Route)
	b = appendString(b, t.URL)
	b = appendInt(b, int64(t.Timeout))
	b = appendInt(b, int64(t.MaxAttempts))
	b = appendInt(b, int64(t.InitialBackoff))
	b = appendInt(b, int64(t.MaxBackoff))
	b = appendInt(b, int64(d.Attempts))
	b = appendInt(b, timeNano(d.NextAt))
	b = appendInt(b, timeNano(d.DeadAt))
	b = appendString(b, d.LastError)
	if version >= deliveryRecordV2 {
		b = binary.AppendUvarint(b, flags)
	}
	if version >= deliveryRecordV3 {
		b = appendString(b, d.OrderKey)
		b = appendInt(b, int64(t.MaxConcurrency))
		b = appendInt(b, int64(t.MaxPerSecond))
	}
	return b
}

func timeNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nanoTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// reader decodes a record; the first error sticks and later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a copy, since bbolt's values are only valid inside their transaction.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	out := make([]byte, n)
	copy(out, r.b[:n])
	r.b = r.b[n:]
	return out
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// version reads the version byte, which must be one of want, and returns it.
func (r *reader) version(want ...byte) byte {
	if len(r.b) == 0 {
		r.err = errCorrupt
		return 0
	}
	v := r.b[0]
	for _, w := range want {
		if v == w {
			r.b = r.b[1:]
			return v
		}
	}
	r.err = fmt.Errorf("%w: version %d, want one of %v", errCorrupt, v, want)
	return 0
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	return r.err
}

func decodeCallback(b []byte) (*callback.Callback, error) {
	r := reader{b: b}
	version := r.version(callbackRecordV1, callbackRecordV2, callbackRecordV3)
	cb := &callback.Callback{
		ID:       r.string(),
		Provider: v1alpha1.Provider(r.string()),
		AppID:    r.string(),
		Command:  r.string(),
		RawQuery: r.string(),
	}
	cb.ReceivedAt = nanoTime(r.varint())
	cb.Body = r.bytes()
	if version >= callbackRecordV2 {
		cb.OperationID = r.string()
	}
	if version >= callbackRecordV3 {
		cb.TraceParent = r.string()
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return cb, nil
}

func decodeDelivery(b []byte) (*delivery, error) {
	r := reader{b: b}
	v := r.version(deliveryRecordV1, deliveryRecordV2, deliveryRecordV3)
	d := &delivery{}
	d.Target.Route = r.string()
	d.Target.URL = r.string()
	d.Target.Timeout = time.Duration(r.varint())
	d.Target.MaxAttempts = int(r.varint())
	d.Target.InitialBackoff = time.Duration(r.varint())
	d.Target.MaxBackoff = time.Duration(r.varint())
	d.Attempts = int(r.varint())
	d.NextAt = nanoTime(r.varint())
	d.DeadAt = nanoTime(r.varint())
	d.LastError = r.string()
	if v >= deliveryRecordV2 {
		flags := r.uvarint()
		d.Target.ForwardSignature = flags&deliveryForwardSignature != 0
		d.Target.Ordered = flags&deliveryOrdered != 0
		d.Target.Replay = flags&deliveryReplay != 0
	}
	if v >= deliveryRecordV3 {
		d.OrderKey = r.string()
		d.Target.MaxConcurrency = int(r.varint())
		d.Target.MaxPerSecond = int(r.varint())
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return d, nil
}
