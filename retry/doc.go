// Package retry holds holdfast's retry policy: the per-connection budget,
// the back-off between upstream attempts, the late dial's decision of when
// to open a client's upstream socket (DecideDial), and the shared
// readiness watcher that knows whether a gateway has finished starting.
//
// The policy types are pure: they take an injected clock and random source,
// decide, and never sleep. Callers wait on a timer raced against their
// context. The only I/O in this package is the HTTP readiness probe, which
// the Watcher receives as a function.
package retry
