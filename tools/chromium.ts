/**
 * The Debian Chromium that runs the page headless with WebGPU (SwiftShader): where it is and how it is started,
 * for the browser test and the browser benchmark. Nothing here downloads a browser.
 */

/** Where Debian's chromium package puts the binary. */
export const CHROMIUM_PATHS: readonly string[] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

/** The first Chromium binary present, or undefined. */
export function findChromium(): string | undefined {
  return CHROMIUM_PATHS.find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
}

/** puppeteer-core launch options: headless with WebGPU, no sandbox (containers), no background traffic. */
export function chromiumLaunchOptions(
  executablePath: string,
  userDataDir: string,
): { executablePath: string; headless: boolean; userDataDir: string; args: string[] } {
  return {
    executablePath,
    headless: true,
    userDataDir,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  };
}
