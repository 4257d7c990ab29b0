package main

import "testing"

// TestCases builds both 10,000-route tables and checks each case reaches the routes it
// should, so `make bench` cannot measure a routing step that routes wrongly.
func TestCases(t *testing.T) {
	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		got, err := c.Route(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != c.Want {
			t.Errorf("%s: %d routes, want %d", c.Name, len(got), c.Want)
		}
	}
}
