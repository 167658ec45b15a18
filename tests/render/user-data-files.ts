/**
 * What a rendered `#cloud-config` document hands cloud-init, for tests that
 * feed it to the real programs: its write_files (with cloud-init's defaults
 * for owner and permissions), bootcmd, runcmd and packages, loaded with js-yaml.
 */
import * as yaml from "js-yaml";

export interface UserDataFile {
  path: string;
  content: string;
  owner: string;
  permissions: string;
  defer: boolean;
}

export interface UserDataDocument {
  writeFiles: UserDataFile[];
  /** bootcmd and runcmd items as rendered: an argv list, or a shell string. */
  bootcmd: (string[] | string)[];
  runcmd: (string[] | string)[];
  packages: string[];
}

interface RawDocument {
  write_files?: { path: string; content?: string; owner?: string; permissions?: string; defer?: boolean; encoding?: string }[];
  bootcmd?: (string[] | string)[];
  runcmd?: (string[] | string)[];
  packages?: string[];
}

export function userDataDocument(text: string): UserDataDocument {
  if (!text.startsWith("#cloud-config\n")) throw new Error("user-data does not start with '#cloud-config'");
  const doc = yaml.load(text) as RawDocument;
  const writeFiles = (doc.write_files ?? []).map((file) => {
    // The renderer writes plain text; an encoded entry would need decoding here first.
    if (file.encoding !== undefined) throw new Error(`${file.path}: encoding ${file.encoding} is not read by this helper`);
    return { path: file.path, content: file.content ?? "", owner: file.owner ?? "root:root", permissions: file.permissions ?? "0644", defer: file.defer === true };
  });
  return { writeFiles, bootcmd: doc.bootcmd ?? [], runcmd: doc.runcmd ?? [], packages: doc.packages ?? [] };
}
