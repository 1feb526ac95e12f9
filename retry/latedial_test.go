package retry

import (
	"testing"
	"time"
)

func TestDecideDial(t *testing.T) {
	t.Parallel()
	pol := DialPolicy{MaxWait: 12 * time.Second, Trust: 5 * time.Second, Refresh: 1100 * time.Millisecond}
	s := time.Second
	for _, tc := range []struct {
		name string
		in   DialInput
		pol  DialPolicy
		want DialDecision
	}{
		{"browser while starting: dial first (750 ms challenge timer)",
			DialInput{Browser: true, State: Starting, Age: 0}, pol, DialDecision{Dial: true, Reason: DialBrowser}},
		{"browser, nothing known",
			DialInput{Browser: true, State: Unknown}, pol, DialDecision{Dial: true, Reason: DialBrowser}},
		{"subprotocols offered: only the gateway's 101 settles them",
			DialInput{Subprotocols: true, State: Starting}, pol, DialDecision{Dial: true, Reason: DialSubprotocols}},
		{"late dial off",
			DialInput{State: Starting}, DialPolicy{MaxWait: -1, Trust: 5 * s}, DialDecision{Dial: true, Reason: DialDisabled}},
		{"late dial zero is off too",
			DialInput{State: Starting}, DialPolicy{}, DialDecision{Dial: true, Reason: DialDisabled}},
		{"started, fresh",
			DialInput{State: Started, Age: 100 * time.Millisecond}, pol, DialDecision{Dial: true, Reason: DialStarted}},
		{"started 4 s ago",
			DialInput{State: Started, Age: 4 * s}, pol, DialDecision{Dial: true, Reason: DialStarted}},
		{"started long ago: it may have restarted since, wait for one probe",
			DialInput{State: Started, Age: time.Hour}, pol, DialDecision{Wait: 1100 * time.Millisecond, Reason: WaitRefresh}},
		{"starting, fresh: wait up to the client's limit",
			DialInput{State: Starting, Age: 200 * time.Millisecond}, pol, DialDecision{Wait: 12 * s, Reason: WaitStarting}},
		{"down, fresh: wait a refresh and look again (no socket, no pre-auth timer)",
			DialInput{State: Down, Age: s, Waited: 4 * s}, pol, DialDecision{Wait: 1100 * time.Millisecond, Reason: WaitDown}},
		{"down, near the limit",
			DialInput{State: Down, Age: s, Waited: 11800 * time.Millisecond}, pol, DialDecision{Wait: 200 * time.Millisecond, Reason: WaitDown}},
		{"down, waited the limit: dial (the dial retries within its budget)",
			DialInput{State: Down, Age: s, Waited: 12 * s}, pol, DialDecision{Dial: true, Reason: DialClientLimit}},
		{"starting, waited 11.5 s: half a second left",
			DialInput{State: Starting, Waited: 11500 * time.Millisecond}, pol, DialDecision{Wait: 500 * time.Millisecond, Reason: WaitStarting}},
		{"starting, waited the client's limit: dial so it gets its challenge",
			DialInput{State: Starting, Waited: 12 * s}, pol, DialDecision{Dial: true, Reason: DialClientLimit}},
		{"starting, waited beyond the limit",
			DialInput{State: Starting, Waited: 13 * s}, pol, DialDecision{Dial: true, Reason: DialClientLimit}},
		{"nothing known: wait for one probe",
			DialInput{State: Unknown}, pol, DialDecision{Wait: 1100 * time.Millisecond, Reason: WaitRefresh}},
		{"starting but stale: wait for one probe",
			DialInput{State: Starting, Age: 6 * s}, pol, DialDecision{Wait: 1100 * time.Millisecond, Reason: WaitRefresh}},
		{"stale, near the limit: the probe wait is cut to the limit",
			DialInput{State: Down, Age: 6 * s, Waited: 11600 * time.Millisecond}, pol, DialDecision{Wait: 400 * time.Millisecond, Reason: WaitRefresh}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DecideDial(tc.in, tc.pol); got != tc.want {
				t.Errorf("DecideDial(%+v) = %+v; want %+v", tc.in, got, tc.want)
			}
		})
	}
}
