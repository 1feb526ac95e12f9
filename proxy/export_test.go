package proxy

// ParkedRelays returns how many relays of h's sessions are parked.
func (h *Handler) ParkedRelays() int { return h.parker.Parked() }
