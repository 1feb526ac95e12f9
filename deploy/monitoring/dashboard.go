package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The dashboard's template variables. Panel queries select the targets with
// sel, so that one dashboard serves any number of holdfast instances.
const (
	sel  = `job=~"$job",instance=~"$instance"`
	rate = "$__rate_interval"
)

// q fills a query template: {sel} becomes the target selector and {rate}
// the rate window.
func q(tmpl string) string {
	return strings.NewReplacer("{sel}", sel, "{rate}", rate).Replace(tmpl)
}

type target struct {
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	RefID        string `json:"refId"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description,omitempty"`
	Datasource  map[string]any `json:"datasource"`
	GridPos     map[string]int `json:"gridPos"`
	Targets     []target       `json:"targets"`
	FieldConfig map[string]any `json:"fieldConfig"`
	Options     map[string]any `json:"options"`
}

var datasource = map[string]any{"type": "prometheus", "uid": "${datasource}"}

// timeseries is a graph of one or more queries (pairs of expression and
// legend) in unit.
func timeseries(title, desc, unit string, queries ...string) panel {
	p := panel{
		Type:        "timeseries",
		Title:       title,
		Description: desc,
		FieldConfig: map[string]any{
			"defaults": map[string]any{
				"unit":   unit,
				"min":    0,
				"custom": map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"},
			},
			"overrides": []any{},
		},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		},
	}
	return p.withTargets(queries...)
}

// stat shows the last value of a query; with textMode "name" it shows the
// series' legend (a label) instead.
func stat(title, desc, textMode string, queries ...string) panel {
	p := panel{
		Type:        "stat",
		Title:       title,
		Description: desc,
		FieldConfig: map[string]any{"defaults": map[string]any{"unit": "none"}, "overrides": []any{}},
		Options: map[string]any{
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"textMode":      textMode,
			"colorMode":     "none",
			"graphMode":     "none",
		},
	}
	return p.withTargets(queries...)
}

func (p panel) withTargets(queries ...string) panel {
	for i := 0; i+1 < len(queries); i += 2 {
		p.Targets = append(p.Targets, target{Expr: q(queries[i]), LegendFormat: queries[i+1], RefID: string(rune('A' + i/2))})
	}
	return p
}

// gatewayStates maps the value of the gateway state query to its name.
var gatewayStates = []struct {
	value       int
	name, color string
}{{0, "unknown", "text"}, {1, "down", "red"}, {2, "starting", "orange"}, {3, "started", "green"}}

func dashboard() ([]byte, error) {
	stateMappings := map[string]any{}
	for _, s := range gatewayStates {
		stateMappings[fmt.Sprint(s.value)] = map[string]any{"text": s.name, "color": s.color, "index": s.value}
	}
	// The gateway state as one number per instance: 0 unknown, 1 down,
	// 2 starting, 3 started.
	stateQuery := `max by (instance) (
  holdfast_gateway_state{{sel},state="down"}
  or 2 * holdfast_gateway_state{{sel},state="starting"}
  or 3 * holdfast_gateway_state{{sel},state="started"}
)`
	state := panel{
		Type:        "state-timeline",
		Title:       "Gateway state",
		Description: "What holdfast last saw of the gateway's startup: down (dials refused), starting (the startup UNAVAILABLE, or /startupz starting), started. holdfast probes only while a client waits.",
		FieldConfig: map[string]any{
			"defaults": map[string]any{
				"mappings": []any{map[string]any{"type": "value", "options": stateMappings}},
				"color":    map[string]any{"mode": "thresholds"},
				"thresholds": map[string]any{"mode": "absolute", "steps": []any{
					map[string]any{"color": "text", "value": nil},
				}},
			},
			"overrides": []any{},
		},
		Options: map[string]any{"showValue": "auto", "mergeValues": true, "rowHeight": 0.8,
			"legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": false}},
	}.withTargets(stateQuery, "{{instance}}")

	var quantiles []string
	for _, qu := range []struct{ q, legend string }{{"0.5", "p50"}, {"0.9", "p90"}, {"0.99", "p99"}} {
		quantiles = append(quantiles,
			"histogram_quantile("+qu.q+", sum by (le) (rate(holdfast_handshake_duration_seconds_bucket{{sel}}[{rate}])))", qu.legend)
	}

	rows := [][]panel{
		{
			stat("Up", "1 while Prometheus scrapes holdfast (the HoldfastDown alert fires after 2 minutes at 0).", "value",
				"min(up{{sel}})", "up"),
			stat("Gateway", "The gateway state holdfast saw last, per instance.", "name",
				"max by (instance, state) (holdfast_gateway_state{{sel}}) == 1", "{{state}}"),
			stat("Sessions", "Client sessions spliced to the gateway now.", "value",
				"sum(holdfast_sessions_active{{sel}})", "sessions"),
			stat("Version", "holdfast_build_info: the holdfast version and the Go version that built it.", "name",
				"count by (version, goversion) (holdfast_build_info{{sel}})", "{{version}} ({{goversion}})"),
		},
		{
			timeseries("Handshakes by result", "Client handshakes per second by how they ended: ok, rejected (the gateway's own refusal), unavailable (still starting or unreachable when the budget ran out), client_gone, error, attribution_refused (gateway.trustedProxies lacks holdfast).", "reqps",
				"sum by (result) (rate(holdfast_handshakes_total{{sel}}[{rate}]))", "{{result}}"),
			timeseries("Handshake duration", "From the client's upgrade request to the end of its handshake, whatever the result. Held connects take as long as the gateway's startup window.", "s",
				quantiles...),
		},
		{
			state,
			timeseries("Holds and retries", "Connects held until the gateway started; clients without an Origin upgraded at once whose challenge waited for the start (late dials); warm upstream sockets of late dials replaced unused (renew: preauth_timer, gateway_closed, challenge_due); late-dialled clients given holdfast's stand-in challenge because the gateway was down when theirs was due; upstream attempts made again: startup_unavailable (a replayable connect refused during startup), dial (refused, 5xx, timeout).", "ops",
				"sum(rate(holdfast_connect_holds_total{{sel}}[{rate}]))", "holds",
				"sum(rate(holdfast_upstream_dials_delayed_total{{sel}}[{rate}]))", "late dials",
				"sum by (reason) (rate(holdfast_upstream_renewals_total{{sel}}[{rate}]))", "renew: {{reason}}",
				"sum(rate(holdfast_standin_challenges_total{{sel}}[{rate}]))", "stand-in challenges",
				"sum by (reason) (rate(holdfast_upstream_retries_total{{sel}}[{rate}]))", "retry: {{reason}}"),
		},
		{
			timeseries("Sessions and waiting connects", "Spliced sessions, and unauthenticated upstream sockets open (connects being held or answered; the gateway admits 32 per client address).", "short",
				"sum(holdfast_sessions_active{{sel}})", "sessions",
				"sum(holdfast_upstream_handshakes_in_flight{{sel}})", "upstream handshakes in flight"),
			timeseries("Relayed messages", "Messages relayed between spliced clients and the gateway, per direction.", "short",
				"sum by (direction) (rate(holdfast_spliced_messages_total{{sel}}[{rate}]))", "{{direction}}"),
		},
		{
			timeseries("Clients by protocol and mode", "The census: client handshakes that sent a connect, per second, by the protocol it offered (3: clients up to 2026.4.27; 4: current), its client.mode and whether the session was bridged to a protocol-4 gateway. No protocol-3 line above zero for long enough (docs/compatibility.md, \"When can the bridge be turned off\"): the bridge carries nobody.", "reqps",
				"sum by (protocol, mode, bridged) (rate(holdfast_client_handshakes_total{{sel}}[{rate}]))", "protocol {{protocol}} {{mode}} bridged={{bridged}}"),
			timeseries("Sessions closed by the gateway", "Spliced sessions the gateway ended, per second, by its close code: 1012 a restart, 1008 a policy close, 4001 revoked authority, 1006 dropped without a close frame (ping timeout, crash).", "ops",
				"sum by (code) (rate(holdfast_gateway_closes_total{{sel}}[{rate}]))", "{{code}}"),
		},
		{
			timeseries("Readiness probes", "holdfast's probes of the gateway's /startupz (or /readyz) by what they found; it probes only while clients wait.", "ops",
				"sum by (result) (rate(holdfast_readiness_probes_total{{sel}}[{rate}]))", "{{result}}"),
			timeseries("Failed handshakes (5 m)", "Share of handshakes that ended unavailable or error over 5 minutes (recording rule instance:holdfast_handshakes_failed:ratio_rate5m; HoldfastHandshakesFailing fires above 10 %).", "percentunit",
				"instance:holdfast_handshakes_failed:ratio_rate5m{{sel}}", "{{instance}}"),
			timeseries("Passthrough and refusals", "HTTP requests and other WebSocket routes reverse-proxied unchanged; clients refused for a global limit (limits.handshakes, limits.preauth_bytes).", "reqps",
				"sum(rate(holdfast_passthrough_requests_total{{sel}}[{rate}]))", "passthrough",
				"sum by (limit) (rate(holdfast_limit_refusals_total{{sel}}[{rate}]))", "refused: {{limit}}"),
		},
	}
	var panels []panel
	y := 0
	for _, row := range rows {
		h := 8
		if row[0].Type == "stat" {
			h = 4
		}
		w := 24 / len(row)
		for i, p := range row {
			p.ID = len(panels) + 1
			p.Datasource = datasource
			p.GridPos = map[string]int{"h": h, "w": w, "x": i * w, "y": y}
			for i := range p.Targets {
				p.Targets[i].RefID = string(rune('A' + i))
			}
			panels = append(panels, p)
		}
		y += h
	}

	variable := func(name, label, query string) map[string]any {
		return map[string]any{
			"name": name, "label": label, "type": "query",
			"datasource": datasource,
			"definition": query,
			"query":      map[string]any{"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
			"refresh":    2, "sort": 1,
			"multi": true, "includeAll": true, "allValue": ".+",
			"current": map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}},
		}
	}
	d := map[string]any{
		"title":         "holdfast",
		"uid":           "holdfast",
		"description":   "holdfast, the WebSocket reverse proxy in front of OpenClaw gateways: handshakes, startup windows absorbed, sessions. Generated by deploy/monitoring (go run ./deploy/monitoring).",
		"tags":          []string{"holdfast", "openclaw"},
		"editable":      true,
		"graphTooltip":  1,
		"schemaVersion": 39,
		"version":       1,
		"time":          map[string]any{"from": "now-1h", "to": "now"},
		"refresh":       "30s",
		"timezone":      "",
		"links":         []any{},
		"annotations":   map[string]any{"list": []any{}},
		"templating": map[string]any{"list": []any{
			map[string]any{
				"name": "datasource", "label": "Data source", "type": "datasource",
				"query": "prometheus", "refresh": 1, "current": map[string]any{},
			},
			variable("job", "job", "label_values(holdfast_build_info, job)"),
			variable("instance", "instance", `label_values(holdfast_build_info{job=~"$job"}, instance)`),
		}},
		"panels": panels,
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// FillVariables replaces the dashboard's variables in a panel query as
// Grafana does for one job, an instance regular expression and a rate
// window.
func FillVariables(expr, job, instance, rateWindow string) string {
	return strings.NewReplacer("$job", job, "$instance", instance, "$__rate_interval", rateWindow).Replace(expr)
}
