//go:build tools

// Package main pins the module's dependencies before code uses them.
package main

import (
	_ "github.com/gorilla/websocket"
	_ "github.com/koding/websocketproxy"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/collectors"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "gopkg.in/yaml.v3"
)
