/**
 * EnvironmentFile= parsing, shared by the checks (a node's etcdctl.env, read
 * through the transport) and the lab (its unit runner and LabTransport).
 */

/** KEY=VALUE lines of an EnvironmentFile (comments, `export`-less, optional quotes). */
export function parseEnvironmentFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    let value = line.slice(eq + 1).trim();
    if ((value.startsWith('"') && value.endsWith('"')) || (value.startsWith("'") && value.endsWith("'"))) value = value.slice(1, -1);
    env[line.slice(0, eq).trim()] = value;
  }
  return env;
}
