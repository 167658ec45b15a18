import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { exec } from "./exec";

/**
 * Screenshots of an HTML document with the headless Chromium of the Debian 13
 * rootfs (lab/build-rootfs.sh installs it): the drill report's render test and
 * `npm run lab -- report --screenshot` share this, so the README's picture is
 * made the way the test checks one.
 *
 * Chromium runs chrooted in an overlay over the rootfs (its profile and cache
 * land in a throwaway upper layer, never in the shared rootfs), in a private
 * mount namespace and a fresh network namespace of its own (`unshare --net`:
 * only a loopback that is down), so it can reach no address at all and nothing
 * it does is sent from the host's network namespace. The document is a local
 * file; the report needs no network by design.
 */

/**
 * `sh -c` script: overlay ROOTFS (lower) UPPER WORK at MERGED, with /proc, /dev, and tmpfs /dev/shm, /run and
 * /tmp, then exec the rest of its arguments chrooted there. Meant to run under `unshare --mount --propagation
 * private`, so every mount vanishes with the command (tests/render/harness.ts's TestRoot runs it too).
 * Arguments: ROOTFS UPPER WORK MERGED ARGV...
 */
export const OVERLAY_CHROOT_SCRIPT = [
  "set -e",
  `mount -t overlay overlay -o lowerdir="$1",upperdir="$2",workdir="$3" "$4"`,
  `mount -t proc proc "$4/proc"`,
  `mount --rbind /dev "$4/dev"`,
  `mount -t tmpfs tmpfs "$4/dev/shm"`,
  `mount -t tmpfs tmpfs "$4/run"`,
  `mount -t tmpfs tmpfs "$4/tmp"`,
  `root=$4; shift 4`,
  `exec chroot "$root" "$@"`,
].join("\n");

export interface ScreenshotSize {
  width: number;
  height: number;
}

/** The file the document is written to inside the root, and where Chromium writes the PNG. */
const IN_ROOT_DIR = "/srv/pgha-report";

/** Chromium's output lines that are noise in a chroot without D-Bus (kept out of error messages). */
const NOISE = /dbus|Fontconfig|bytes written to file|unexpected operator|^\s*$/;

export async function screenshotHtml(rootfs: string, html: string, size: ScreenshotSize, timeoutMs = 90_000): Promise<Buffer> {
  if (!fs.existsSync(path.join(rootfs, "usr/bin/chromium"))) throw new Error(`${rootfs} has no /usr/bin/chromium: rebuild it with \`bash lab/build-rootfs.sh\``);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgha-chromium-"));
  try {
    const upper = path.join(dir, "upper");
    const work = path.join(dir, "work");
    const merged = path.join(dir, "merged");
    const hostDir = path.join(upper, IN_ROOT_DIR);
    for (const d of [hostDir, work, merged]) fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(hostDir, "report.html"), html);
    // The mounts exist only in unshare's namespace and vanish with it, so there is nothing to unmount afterwards.
    const script = OVERLAY_CHROOT_SCRIPT;
    const chromium = [
      "/usr/bin/chromium",
      "--headless",
      // Root in a chroot: Chromium's sandbox needs user namespaces and setuid helpers a minbase root lacks.
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-extensions",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--hide-scrollbars",
      "--mute-audio",
      // One CSS pixel per PNG pixel: the test measures the chart in CSS pixels.
      "--force-device-scale-factor=1",
      "--user-data-dir=/tmp/chromium-profile",
      `--window-size=${size.width},${size.height}`,
      `--screenshot=${IN_ROOT_DIR}/screenshot.png`,
      `file://${IN_ROOT_DIR}/report.html`,
    ];
    const argv = [
      "unshare",
      "--mount",
      "--net",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
      "sh",
      rootfs,
      upper,
      work,
      merged,
      "env",
      "HOME=/tmp",
      "LANG=C.UTF-8",
      ...chromium,
    ];
    const result = await exec(argv, { timeoutMs });
    const png = path.join(hostDir, "screenshot.png");
    if (!fs.existsSync(png)) {
      const said = (result.stderr + result.stdout)
        .split("\n")
        .filter((line) => !NOISE.test(line))
        .slice(-15)
        .join("\n");
      throw new Error(`chromium wrote no screenshot (exit ${result.code}${result.timedOut ? ", timed out" : ""}): ${said}`);
    }
    return fs.readFileSync(png);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The cached rootfs (PGHA_ROOTFS, or the one lab/build-rootfs.sh built); never starts a build. */
export async function cachedRootfs(): Promise<string> {
  if (process.env.PGHA_ROOTFS) return process.env.PGHA_ROOTFS;
  const result = await exec(["bash", path.join(__dirname, "build-rootfs.sh"), "--check"]);
  if (result.code !== 0) throw new Error(`no Debian 13 rootfs to run Chromium from: ${result.stderr.trim()}`);
  return result.stdout.trim();
}
