package fakegw

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// requestFrame is a validated RequestFrame.
type requestFrame struct {
	ID     string
	Method string
	Params json.RawMessage // nil when absent
}

// parseRequestFrame validates the closed RequestFrame schema:
// {type:"req", id:NonEmptyString, method:NonEmptyString, params?:any,
// traceparent?:string≤128, expectedProfileId?:string}.
func parseRequestFrame(obj map[string]json.RawMessage) (requestFrame, bool) {
	var f requestFrame
	for k, v := range obj {
		switch k {
		case "type":
			var t string
			if json.Unmarshal(v, &t) != nil || t != "req" {
				return f, false
			}
		case "id":
			if json.Unmarshal(v, &f.ID) != nil || f.ID == "" {
				return f, false
			}
		case "method":
			if json.Unmarshal(v, &f.Method) != nil || f.Method == "" {
				return f, false
			}
		case "params":
			f.Params = v
		case "traceparent":
			var s string
			if json.Unmarshal(v, &s) != nil || len([]rune(s)) > 128 {
				return f, false
			}
		case "expectedProfileId":
			var s string
			if json.Unmarshal(v, &s) != nil {
				return f, false
			}
		default:
			return f, false
		}
	}
	if _, ok := obj["type"]; !ok || f.ID == "" || f.Method == "" {
		return f, false
	}
	return f, true
}

// isWorkerClaim reports a connect that claims the worker identity (role
// "worker", client id "openclaw-worker" or mode "worker").
func isWorkerClaim(obj map[string]json.RawMessage) bool {
	var m struct {
		Method string `json:"method"`
		Params struct {
			Role   any `json:"role"`
			Client struct {
				ID   any `json:"id"`
				Mode any `json:"mode"`
			} `json:"client"`
		} `json:"params"`
	}
	raw, err := json.Marshal(obj)
	if err != nil || json.Unmarshal(raw, &m) != nil || m.Method != "connect" {
		return false
	}
	return m.Params.Role == "worker" || m.Params.Client.ID == "openclaw-worker" || m.Params.Client.Mode == "worker"
}

// Client ids and modes accepted by the connect schema.
const (
	clientIDs   = "webchat-ui openclaw-control-ui openclaw-browser-copilot openclaw-tui webchat cli gateway-client openclaw-macos openclaw-linux openclaw-ios openclaw-watchos openclaw-android node-host openclaw-worker test fingerprint openclaw-probe"
	clientModes = "webchat cli ui backend node worker probe test"
)

func inList(list, v string) bool {
	for _, w := range bytes.Fields([]byte(list)) {
		if string(w) == v {
			return true
		}
	}
	return false
}

type connectClient struct {
	ID, Version, Platform, Mode, DeviceFamily string
}

type connectDevice struct {
	ID, PublicKey, Signature, Nonce string
	SignedAt                        int64
}

type connectAuth struct {
	Token, DeviceToken, BootstrapToken, Password *string
}

// connectParams is a schema-valid ConnectParams, reduced to what the fake
// uses.
type connectParams struct {
	MinProtocol, MaxProtocol int
	Client                   connectClient
	Role                     string
	Scopes                   []string
	Device                   *connectDevice
	Auth                     *connectAuth
}

// signatureToken is auth.token ?? auth.deviceToken ?? auth.bootstrapToken ?? "".
func (p *connectParams) signatureToken() string {
	if p.Auth == nil {
		return ""
	}
	for _, t := range []*string{p.Auth.Token, p.Auth.DeviceToken, p.Auth.BootstrapToken} {
		if t != nil {
			return *t
		}
	}
	return ""
}

// schemaError formats like the gateway's validator: "at <path>: <problem>".
type schemaError struct{ path, msg string }

func (e *schemaError) Error() string {
	if e.path == "" {
		return e.msg
	}
	return "at " + e.path + ": " + e.msg
}

func schemaErr(path, format string, args ...any) error {
	return &schemaError{path: path, msg: fmt.Sprintf(format, args...)}
}

// object decodes raw as a JSON object whose keys are all in allowed.
func object(raw json.RawMessage, path string, allowed ...string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
		return nil, schemaErr(path, "must be object")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
				break
			}
		}
		if !found {
			return nil, schemaErr(path, "unexpected property '%s'", k)
		}
	}
	return m, nil
}

func str(m map[string]json.RawMessage, key, path string, required, nonEmpty bool, maxLen int) (*string, error) {
	raw, ok := m[key]
	if !ok {
		if required {
			return nil, schemaErr(path, "must have required property '%s'", key)
		}
		return nil, nil
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, schemaErr(path+"/"+key, "must be string")
	}
	if nonEmpty && s == "" {
		return nil, schemaErr(path+"/"+key, "must NOT have fewer than 1 characters")
	}
	if maxLen > 0 && len([]rune(s)) > maxLen {
		return nil, schemaErr(path+"/"+key, "must NOT have more than %d characters", maxLen)
	}
	return &s, nil
}

func integer(m map[string]json.RawMessage, key, path string, required bool, min int64) (*int64, error) {
	raw, ok := m[key]
	if !ok {
		if required {
			return nil, schemaErr(path, "must have required property '%s'", key)
		}
		return nil, nil
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil || f != math.Trunc(f) || math.IsInf(f, 0) {
		return nil, schemaErr(path+"/"+key, "must be integer")
	}
	if f < float64(min) {
		return nil, schemaErr(path+"/"+key, "must be >= %d", min)
	}
	n := int64(f)
	return &n, nil
}

func stringArray(m map[string]json.RawMessage, key, path string) ([]string, bool, error) {
	raw, ok := m[key]
	if !ok {
		return nil, false, nil
	}
	var arr []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &arr) != nil {
		return nil, true, schemaErr(path+"/"+key, "must be array")
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		var s string
		if len(e) == 0 || e[0] != '"' || json.Unmarshal(e, &s) != nil {
			return nil, true, schemaErr(fmt.Sprintf("%s/%s/%d", path, key, i), "must be string")
		}
		if s == "" {
			return nil, true, schemaErr(fmt.Sprintf("%s/%s/%d", path, key, i), "must NOT have fewer than 1 characters")
		}
		out = append(out, s)
	}
	return out, true, nil
}

// parseConnectParams validates raw against the closed ConnectParams schema.
func parseConnectParams(raw json.RawMessage) (*connectParams, error) {
	top, err := object(raw, "", "minProtocol", "maxProtocol", "client", "caps", "commands", "computerUse",
		"workerRuns", "permissions", "pathEnv", "role", "scopes", "device", "auth", "modelCatalog", "locale", "userAgent")
	if err != nil {
		return nil, err
	}
	p := &connectParams{}
	minP, err := integer(top, "minProtocol", "", true, 1)
	if err != nil {
		return nil, err
	}
	maxP, err := integer(top, "maxProtocol", "", true, 1)
	if err != nil {
		return nil, err
	}
	p.MinProtocol, p.MaxProtocol = int(*minP), int(*maxP)

	craw, ok := top["client"]
	if !ok {
		return nil, schemaErr("", "must have required property 'client'")
	}
	cm, err := object(craw, "/client", "id", "displayName", "version", "platform", "deviceFamily",
		"modelIdentifier", "mode", "instanceId", "buildId", "timeZone")
	if err != nil {
		return nil, err
	}
	id, err := str(cm, "id", "/client", true, true, 0)
	if err != nil {
		return nil, err
	}
	if !inList(clientIDs, *id) {
		return nil, schemaErr("/client/id", "must be equal to one of the allowed values")
	}
	version, err := str(cm, "version", "/client", true, true, 0)
	if err != nil {
		return nil, err
	}
	platform, err := str(cm, "platform", "/client", true, true, 0)
	if err != nil {
		return nil, err
	}
	mode, err := str(cm, "mode", "/client", true, true, 0)
	if err != nil {
		return nil, err
	}
	if !inList(clientModes, *mode) {
		return nil, schemaErr("/client/mode", "must be equal to one of the allowed values")
	}
	for _, k := range []string{"displayName", "deviceFamily", "modelIdentifier", "instanceId"} {
		if _, err := str(cm, k, "/client", false, true, 0); err != nil {
			return nil, err
		}
	}
	if _, err := str(cm, "buildId", "/client", false, false, 96); err != nil {
		return nil, err
	}
	if _, err := str(cm, "timeZone", "/client", false, false, 64); err != nil {
		return nil, err
	}
	family, _ := str(cm, "deviceFamily", "/client", false, true, 0)
	p.Client = connectClient{ID: *id, Version: *version, Platform: *platform, Mode: *mode}
	if family != nil {
		p.Client.DeviceFamily = *family
	}

	for _, k := range []string{"caps", "commands"} {
		if _, _, err := stringArray(top, k, ""); err != nil {
			return nil, err
		}
	}
	scopes, _, err := stringArray(top, "scopes", "")
	if err != nil {
		return nil, err
	}
	p.Scopes = scopes
	if role, err := str(top, "role", "", false, true, 0); err != nil {
		return nil, err
	} else if role != nil {
		p.Role = *role
	}
	for _, k := range []string{"pathEnv", "locale", "userAgent"} {
		if _, err := str(top, k, "", false, false, 0); err != nil {
			return nil, err
		}
	}
	if praw, ok := top["permissions"]; ok {
		var perms map[string]bool
		if len(praw) == 0 || praw[0] != '{' || json.Unmarshal(praw, &perms) != nil {
			return nil, schemaErr("/permissions", "must be object")
		}
	}

	if draw, ok := top["device"]; ok {
		dm, err := object(draw, "/device", "id", "publicKey", "signature", "signedAt", "nonce")
		if err != nil {
			return nil, err
		}
		d := &connectDevice{}
		for _, f := range []struct {
			key string
			dst *string
		}{{"id", &d.ID}, {"publicKey", &d.PublicKey}, {"signature", &d.Signature}, {"nonce", &d.Nonce}} {
			v, err := str(dm, f.key, "/device", true, true, 0)
			if err != nil {
				return nil, err
			}
			*f.dst = *v
		}
		at, err := integer(dm, "signedAt", "/device", true, 0)
		if err != nil {
			return nil, err
		}
		d.SignedAt = *at
		p.Device = d
	}

	if araw, ok := top["auth"]; ok {
		am, err := object(araw, "/auth", "token", "bootstrapToken", "deviceToken", "password",
			"approvalRuntimeToken", "agentRuntimeIdentityToken")
		if err != nil {
			return nil, err
		}
		a := &connectAuth{}
		for _, f := range []struct {
			key string
			dst **string
		}{{"token", &a.Token}, {"deviceToken", &a.DeviceToken}, {"bootstrapToken", &a.BootstrapToken}, {"password", &a.Password}} {
			v, err := str(am, f.key, "/auth", false, false, 0)
			if err != nil {
				return nil, err
			}
			*f.dst = v
		}
		for _, k := range []string{"approvalRuntimeToken", "agentRuntimeIdentityToken"} {
			if _, err := str(am, k, "/auth", false, false, 0); err != nil {
				return nil, err
			}
		}
		p.Auth = a
	}
	return p, nil
}
