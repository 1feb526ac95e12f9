// A long-lived session of OpenClaw's own GatewayClient (from the package's
// plugin SDK), as a service or node host keeps one: it prints one JSON line
// per hello-ok, close and connect error, and reconnects as the client
// itself decides. It ends when its stdin closes.
//
// Usage: node session.mjs <dist/plugin-sdk/gateway-runtime.js> <url> <token>
import { pathToFileURL } from "node:url";

const [runtimePath, url, token] = process.argv.slice(2);
const { GatewayClient } = await import(pathToFileURL(runtimePath).href);
const out = (o) => process.stdout.write(JSON.stringify({ ...o, t: Date.now() }) + "\n");

const client = new GatewayClient({
  url,
  token,
  onHelloOk: () => out({ ev: "hello" }),
  onClose: (code, reason) => out({ ev: "close", code, reason: String(reason ?? "") }),
  onConnectError: (err) => out({ ev: "connect-error", message: String(err?.message ?? err) }),
});
client.start();
process.stdin.on("end", () => {
  client.stop();
  process.exit(0);
});
process.stdin.resume();
