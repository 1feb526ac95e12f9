// Package testkit holds what holdfast's tests share: a scripted gateway on
// real 127.0.0.1 sockets for the cases internal/fakegw does not cover (a
// gateway that misbehaves in one precise way), one WaitFor, device
// identities, a synchronised log buffer, raw WebSocket sockets and a frame
// codec (RFC 6455 §5.2) for tests that need every byte on the wire, and
// DefaultParallel for packages whose tests mostly wait on timers and sockets.
//
// internal/fakegw stays the protocol oracle: testkit knows only the outline
// of the gateway protocol (challenge, connect, hello-ok) that scripted
// stand-ins need, and neither it nor fakegw imports holdfast's protocol code.
package testkit
