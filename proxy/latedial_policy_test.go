package proxy

import (
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/retry"
)

func TestDecideDial(t *testing.T) {
	t.Parallel()
	pol := dialPolicy{MaxWait: 12 * time.Second, Trust: 5 * time.Second, Refresh: 1100 * time.Millisecond}
	s := time.Second
	for _, tc := range []struct {
		name string
		in   dialInput
		pol  dialPolicy
		want dialDecision
	}{
		{"browser while starting: dial first (750 ms challenge timer)",
			dialInput{Browser: true, State: retry.Starting, Age: 0}, pol, dialDecision{Dial: true, Reason: dialBrowser}},
		{"browser, nothing known",
			dialInput{Browser: true, State: retry.Unknown}, pol, dialDecision{Dial: true, Reason: dialBrowser}},
		{"subprotocols offered: only the gateway's 101 settles them",
			dialInput{Subprotocols: true, State: retry.Starting}, pol, dialDecision{Dial: true, Reason: dialSubprotocols}},
		{"late dial off",
			dialInput{State: retry.Starting}, dialPolicy{MaxWait: -1, Trust: 5 * s}, dialDecision{Dial: true, Reason: dialDisabled}},
		{"late dial zero is off too",
			dialInput{State: retry.Starting}, dialPolicy{}, dialDecision{Dial: true, Reason: dialDisabled}},
		{"started, fresh",
			dialInput{State: retry.Started, Age: 100 * time.Millisecond}, pol, dialDecision{Dial: true, Reason: dialStarted}},
		{"started 4 s ago",
			dialInput{State: retry.Started, Age: 4 * s}, pol, dialDecision{Dial: true, Reason: dialStarted}},
		{"started long ago: it may have restarted since, wait for one probe",
			dialInput{State: retry.Started, Age: time.Hour}, pol, dialDecision{Wait: 1100 * time.Millisecond, Reason: waitRefresh}},
		{"starting, fresh: wait up to the client's limit",
			dialInput{State: retry.Starting, Age: 200 * time.Millisecond}, pol, dialDecision{Wait: 12 * s, Reason: waitStarting}},
		{"down, fresh: wait a refresh and look again (no socket, no pre-auth timer)",
			dialInput{State: retry.Down, Age: s, Waited: 4 * s}, pol, dialDecision{Wait: 1100 * time.Millisecond, Reason: waitDown}},
		{"down, near the limit",
			dialInput{State: retry.Down, Age: s, Waited: 11800 * time.Millisecond}, pol, dialDecision{Wait: 200 * time.Millisecond, Reason: waitDown}},
		{"down, waited the limit: dial (the dial retries within its budget)",
			dialInput{State: retry.Down, Age: s, Waited: 12 * s}, pol, dialDecision{Dial: true, Reason: dialClientLimit}},
		{"starting, waited 11.5 s: half a second left",
			dialInput{State: retry.Starting, Waited: 11500 * time.Millisecond}, pol, dialDecision{Wait: 500 * time.Millisecond, Reason: waitStarting}},
		{"starting, waited the client's limit: dial so it gets its challenge",
			dialInput{State: retry.Starting, Waited: 12 * s}, pol, dialDecision{Dial: true, Reason: dialClientLimit}},
		{"starting, waited beyond the limit",
			dialInput{State: retry.Starting, Waited: 13 * s}, pol, dialDecision{Dial: true, Reason: dialClientLimit}},
		{"nothing known: wait for one probe",
			dialInput{State: retry.Unknown}, pol, dialDecision{Wait: 1100 * time.Millisecond, Reason: waitRefresh}},
		{"starting but stale: wait for one probe",
			dialInput{State: retry.Starting, Age: 6 * s}, pol, dialDecision{Wait: 1100 * time.Millisecond, Reason: waitRefresh}},
		{"stale, near the limit: the probe wait is cut to the limit",
			dialInput{State: retry.Down, Age: 6 * s, Waited: 11600 * time.Millisecond}, pol, dialDecision{Wait: 400 * time.Millisecond, Reason: waitRefresh}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideDial(tc.in, tc.pol); got != tc.want {
				t.Errorf("decideDial(%+v) = %+v; want %+v", tc.in, got, tc.want)
			}
		})
	}
}
