package gwproto_test

import (
	"encoding/json"
	"fmt"
)

// helloOKFrame returns a hello-ok res of about the real gateway's size
// (15 KB: its features list every method and event).
func helloOKFrame(id string) []byte {
	var methods []string
	for i := range 400 {
		methods = append(methods, fmt.Sprintf("method.number%d", i))
	}
	b, _ := json.Marshal(map[string]any{
		"type": "res", "id": id, "ok": true,
		"payload": map[string]any{
			"type": "hello-ok", "protocol": 4,
			"server":   map[string]any{"version": "2026.9.6", "connId": "conn-1"},
			"features": map[string]any{"methods": methods, "events": []string{"tick", "health", "chat"}},
			"snapshot": map[string]any{"presence": []any{}, "health": map[string]any{}, "uptimeMs": 1234},
			"auth":     map[string]any{"role": "operator", "scopes": []string{"operator.read"}},
			"policy":   map[string]any{"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000},
		},
	})
	return b
}
