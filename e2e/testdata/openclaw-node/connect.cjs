// connect.cjs drives the third-party npm client openclaw-node (pinned in
// e2e/lock/openclaw-node) for the end-to-end suite: it seeds a stored
// device identity whose deviceToken is the gateway's shared token, calls
// connect() once, and prints one JSON line saying what happened, including
// whether the stored token survived (openclaw-node deletes it when a socket
// closes before hello-ok).
//
// Usage: node connect.cjs PREFIX URL TOKEN IDENTITY_FILE
// The token is read from the environment (OPENCLAW_E2E_TOKEN) when TOKEN
// is "-", so it does not show in the process list.
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");

const [prefix, url, tokenArg, identityFile] = process.argv.slice(2);
const token = tokenArg === "-" ? process.env.OPENCLAW_E2E_TOKEN : tokenArg;
const { OpenClawClient } = createRequire(path.join(prefix, "package.json"))("openclaw-node");

function seedIdentity(file) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
  const publicKeyPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  const privateKeyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const raw = publicKey.export({ type: "spki", format: "der" }).subarray(-32);
  const deviceId = crypto.createHash("sha256").update(raw).digest("hex");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ version: 1, deviceId, publicKeyPem, privateKeyPem, deviceToken: token }, null, 2), { mode: 0o600 });
}

function storedToken(file) {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")).deviceToken === token;
  } catch {
    return false;
  }
}

async function main() {
  seedIdentity(identityFile);
  const out = { start: Date.now(), resolved: false, error: null, end: 0, tokenKept: false, closes: [], health: false, serverVersion: null };
  const client = new OpenClawClient({ url, token, deviceIdentityPath: identityFile, autoReconnect: false });
  client.on("error", () => {});
  client.on("disconnected", () => out.closes.push(Date.now() - out.start));
  try {
    const hello = await client.connect();
    out.resolved = true;
    out.serverVersion = hello?.server?.version ?? null;
  } catch (e) {
    out.error = String(e && e.message ? e.message : e);
  }
  out.end = Date.now();
  if (out.resolved) {
    try {
      const res = await client.request("health", {});
      out.health = Boolean(res && res.ok);
    } catch (e) {
      out.error = "health: " + String(e && e.message ? e.message : e);
    }
  }
  out.tokenKept = storedToken(identityFile);
  try {
    await client.disconnect();
  } catch {}
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: String(e) }) + "\n");
  process.exit(2);
});
