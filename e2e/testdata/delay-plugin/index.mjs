// The gateway awaits every plugin service's start() before it marks its
// startup sidecars ready, so a start() that resolves late widens the window
// in which connects are answered UNAVAILABLE / 1013.
export default {
  id: "holdfast-e2e-delay",
  name: "holdfast e2e startup delay",
  register(api) {
    const delayMs = Number(api.pluginConfig?.delayMs ?? 5000);
    let timer;
    api.registerService({
      id: "holdfast-e2e-delay",
      start: () =>
        new Promise((resolve) => {
          api.logger?.info?.(`holdfast-e2e-delay: holding startup for ${delayMs} ms`);
          timer = setTimeout(resolve, delayMs);
        }),
      stop: () => clearTimeout(timer),
    });
  },
};
