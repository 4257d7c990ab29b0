package spool

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

func TestRecordRoundTrip(t *testing.T) {
	cb := sampleCallback(t, 7)
	got, err := decodeCallback(encodeCallback(cb))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cb.ID || got.Provider != cb.Provider || got.AppID != cb.AppID || got.Command != cb.Command ||
		got.RawQuery != cb.RawQuery || !bytes.Equal(got.Body, cb.Body) || !got.ReceivedAt.Equal(cb.ReceivedAt) {
		t.Errorf("callback round trip:\n got %+v\nwant %+v", got, cb)
	}
	if ra := callbackReceivedAt(encodeCallback(cb)); !ra.Equal(cb.ReceivedAt) {
		t.Errorf("callbackReceivedAt = %v, want %v", ra, cb.ReceivedAt)
	}

	d := &delivery{
		Target:   callback.Target{Route: "ns/r", URL: "http://127.0.0.1:9/x?a=b", Timeout: time.Second, MaxAttempts: 7, InitialBackoff: time.Millisecond, MaxBackoff: time.Minute},
		Attempts: 3, NextAt: time.Unix(0, 1700000000123456789), DeadAt: time.Unix(1700000001, 0), LastError: "HTTP 500: nope",
	}
	gd, err := decodeDelivery(encodeDelivery(d))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gd.Target, d.Target) || gd.Attempts != d.Attempts || !gd.NextAt.Equal(d.NextAt) ||
		!gd.DeadAt.Equal(d.DeadAt) || gd.LastError != d.LastError {
		t.Errorf("delivery round trip:\n got %+v\nwant %+v", gd, d)
	}
	zero, err := decodeDelivery(encodeDelivery(&delivery{}))
	if err != nil || !zero.NextAt.IsZero() || !zero.DeadAt.IsZero() {
		t.Errorf("zero delivery: %+v, %v", zero, err)
	}

	for name, b := range map[string][]byte{
		"empty":          nil,
		"wrong version":  {9},
		"truncated":      encodeCallback(cb)[:20],
		"trailing bytes": append(encodeCallback(cb), 0),
	} {
		if _, err := decodeCallback(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodeCallback error %v, want errCorrupt", name, err)
		}
	}
}

// TestRecordOperationID: a callback with OpenIM's operationID is stored as a version 2
// record that keeps it; one without is still written as version 1, which every earlier
// receiver reads.
func TestRecordOperationID(t *testing.T) {
	cb := sampleCallback(t, 8)
	if b := encodeCallback(cb); b[0] != callbackRecordV1 {
		t.Errorf("a callback without an operationID is written as version %d, want %d", b[0], callbackRecordV1)
	}
	cb.OperationID = "1700000000123-42"
	b := encodeCallback(cb)
	if b[0] != callbackRecordV2 {
		t.Errorf("a callback with an operationID is written as version %d, want %d", b[0], callbackRecordV2)
	}
	got, err := decodeCallback(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.OperationID != cb.OperationID || !bytes.Equal(got.Body, cb.Body) || got.ID != cb.ID {
		t.Errorf("round trip: got %+v, want %+v", got, cb)
	}
	if ra := callbackReceivedAt(b); !ra.Equal(cb.ReceivedAt) {
		t.Errorf("callbackReceivedAt of a version 2 record = %v, want %v", ra, cb.ReceivedAt)
	}
	if _, err := decodeCallback(b[:len(b)-1]); !errors.Is(err, errCorrupt) {
		t.Errorf("truncated version 2 record: error %v, want errCorrupt", err)
	}
}

// FuzzDecode checks that no stored bytes, however damaged, crash the decoders, and that
// whatever decodes survives a second round trip unchanged.
func FuzzDecode(f *testing.F) {
	f.Add(encodeCallback(sampleCallback(f, 1)))
	f.Add(encodeDelivery(&delivery{Target: callback.Target{Route: "a/b", URL: "http://127.0.0.1"}, Attempts: 2, LastError: "x"}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if cb, err := decodeCallback(b); err == nil {
			again, err := decodeCallback(encodeCallback(cb))
			if err != nil || !reflect.DeepEqual(again, cb) {
				t.Errorf("callback round trip: %+v, %v; want %+v", again, err, cb)
			}
		}
		if d, err := decodeDelivery(b); err == nil {
			again, err := decodeDelivery(encodeDelivery(d))
			if err != nil || !reflect.DeepEqual(again, d) {
				t.Errorf("delivery round trip: %+v, %v; want %+v", again, err, d)
			}
		}
		_ = callbackReceivedAt(b)
		_, _, _ = parseDeliveryKey(b)
	})
}

// TestDeliveryRecordForwardSignature: the flag survives the spool (a V2 record); a
// delivery without it stays a V1 record, readable by receivers that predate V2.
func TestDeliveryRecordForwardSignature(t *testing.T) {
	for _, fwd := range []bool{false, true} {
		b := encodeDelivery(&delivery{Target: callback.Target{Route: "a/b", URL: "http://127.0.0.1", ForwardSignature: fwd}})
		if want := byte(map[bool]int{false: deliveryRecordV1, true: deliveryRecordV2}[fwd]); b[0] != want {
			t.Errorf("ForwardSignature %v: record version %d, want %d", fwd, b[0], want)
		}
		d, err := decodeDelivery(b)
		if err != nil || d.Target.ForwardSignature != fwd {
			t.Errorf("ForwardSignature %v: decoded %+v, %v", fwd, d, err)
		}
	}
}

// TestDeliveryRecordOrdered: the conversation key and the route's delivery limits
// survive the spool (a V3 record); an unordered, unlimited delivery stays V1.
func TestDeliveryRecordOrdered(t *testing.T) {
	in := &delivery{
		Target:   callback.Target{Route: "a/b", URL: "http://127.0.0.1", Ordered: true, MaxConcurrency: 4, MaxPerSecond: 50, ForwardSignature: true},
		Attempts: 2, OrderKey: "c2c:1:a_b",
	}
	b := encodeDelivery(in)
	if b[0] != deliveryRecordV3 {
		t.Fatalf("record version %d, want %d", b[0], deliveryRecordV3)
	}
	d, err := decodeDelivery(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Target != in.Target || d.OrderKey != in.OrderKey || d.Attempts != 2 {
		t.Errorf("decoded %+v, want %+v", d, in)
	}
	if v := encodeDelivery(&delivery{Target: callback.Target{Route: "a/b", URL: "http://127.0.0.1"}})[0]; v != deliveryRecordV1 {
		t.Errorf("plain delivery: version %d, want %d", v, deliveryRecordV1)
	}
}
