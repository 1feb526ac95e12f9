// The gateway awaits every plugin service's start() before it marks its
// startup sidecars ready, so a start() that resolves late widens the window
// in which connects are answered UNAVAILABLE / 1013. It resolves when
// releaseFile exists (checked every 25 ms) or after delayMs, whichever
// comes first, so a test can end the window once its clients are in it.
import { existsSync } from "node:fs";

export default {
  id: "holdfast-e2e-delay",
  name: "holdfast e2e startup delay",
  register(api) {
    const cfg = api.pluginConfig ?? {};
    const delayMs = Number(cfg.delayMs ?? 5000);
    const releaseFile = typeof cfg.releaseFile === "string" ? cfg.releaseFile : "";
    let timer;
    api.registerService({
      id: "holdfast-e2e-delay",
      start: () =>
        new Promise((resolve) => {
          const t0 = Date.now();
          api.logger?.info?.(`holdfast-e2e-delay: holding startup (max ${delayMs} ms, release file ${releaseFile || "none"})`);
          const tick = () => {
            if ((releaseFile && existsSync(releaseFile)) || Date.now() - t0 >= delayMs) {
              api.logger?.info?.(`holdfast-e2e-delay: released after ${Date.now() - t0} ms`);
              resolve();
              return;
            }
            timer = setTimeout(tick, 25);
          };
          tick();
        }),
      stop: () => clearTimeout(timer),
    });
  },
};
