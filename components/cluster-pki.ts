import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as tls from "@pulumi/tls";
import { CA_PLAN, KEY_ALGORITHM, LEAF_EARLY_RENEWAL_HOURS, LEAF_VALIDITY_HOURS, type CertificatePlan, type ParameterValue, type PasswordId, type PasswordPlan } from "../plan";
import { TYPE_PREFIX } from "./naming";

/** Arguments of {@link ClusterPki}. */
export interface ClusterPkiArgs {
  /** Every leaf certificate to issue (`plan.certificates`): subject, SANs and key usages. */
  certificates: CertificatePlan[];
  /** Every password to generate (`plan.passwords`). */
  passwords: PasswordPlan[];
}

/** One issued leaf certificate. */
export interface IssuedCertificate {
  certPem: pulumi.Output<string>;
  /** Secret. */
  privateKeyPem: pulumi.Output<string>;
}

/** Resolves what an SSM parameter must hold to a value (see `ParameterValue` in plan/secrets.ts). */
export interface ParameterValueSource {
  parameterValue(value: ParameterValue): pulumi.Output<string>;
}

/** Checks the PKI inputs; throws on the first problem. */
export function validateClusterPkiArgs(args: ClusterPkiArgs): void {
  const ids = new Set<string>();
  for (const cert of args.certificates) {
    if (ids.has(cert.id)) throw new Error(`ClusterPki: certificate id ${cert.id} is planned twice`);
    ids.add(cert.id);
    if (cert.allowedUses.length === 0) throw new Error(`ClusterPki: certificate ${cert.id} has no allowed uses`);
    if (cert.dnsNames.length + cert.ipAddresses.length === 0) throw new Error(`ClusterPki: certificate ${cert.id} has no subject alternative names`);
  }
  const passwordIds = new Set<string>();
  for (const password of args.passwords) {
    if (passwordIds.has(password.id)) throw new Error(`ClusterPki: password ${password.id} is planned twice`);
    passwordIds.add(password.id);
    if (!Number.isInteger(password.length) || password.length < 16) throw new Error(`ClusterPki: password ${password.id} must be at least 16 characters`);
  }
}

/**
 * The cluster's private CA, every leaf certificate and every password, all
 * generated in the Pulumi state (encrypted there as secrets):
 *
 * - one ECDSA P-256 CA, self-signed, valid `CA_PLAN.validityHours`;
 * - per planned certificate a key, a CSR with the plan's SANs and a
 *   CA-signed certificate with the plan's key usages; `pulumi up` re-issues a
 *   leaf in its last `LEAF_EARLY_RENEWAL_HOURS` (same key, new certificate),
 *   updates the SSM parameter and, because the certificates' hash is a
 *   trigger of the rollout (ReadinessGate), has every node fetch and reload
 *   it one at a time;
 * - per planned password a `random.RandomPassword` without special
 *   characters (the values land unquoted in a systemd EnvironmentFile).
 *
 * Private keys and passwords are exposed only as secret outputs.
 */
export class ClusterPki extends pulumi.ComponentResource implements ParameterValueSource {
  /** The CA certificate (public). */
  public readonly caCertPem: pulumi.Output<string>;
  /** Issued leaf certificates keyed by the plan's certificate id (`<node>-<kind>`). */
  public readonly certificates: Readonly<Record<string, IssuedCertificate>>;
  /** Generated passwords keyed by password id; every value is secret. */
  public readonly passwords: Readonly<Partial<Record<PasswordId, pulumi.Output<string>>>>;

  constructor(name: string, args: ClusterPkiArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:ClusterPki`, name, {}, opts);
    validateClusterPkiArgs(args);
    const child = { parent: this };

    const caKey = new tls.PrivateKey(`${name}-ca-key`, { ...KEY_ALGORITHM }, child);
    const ca = new tls.SelfSignedCert(
      `${name}-ca`,
      {
        privateKeyPem: caKey.privateKeyPem,
        subject: { commonName: CA_PLAN.commonName, organization: CA_PLAN.organization },
        isCaCertificate: true,
        setSubjectKeyId: true,
        allowedUses: CA_PLAN.allowedUses,
        validityPeriodHours: CA_PLAN.validityHours,
      },
      child,
    );

    const certificates: Record<string, IssuedCertificate> = {};
    for (const planned of args.certificates) {
      const key = new tls.PrivateKey(`${name}-${planned.id}-key`, { ...KEY_ALGORITHM }, child);
      const request = new tls.CertRequest(
        `${name}-${planned.id}-csr`,
        {
          privateKeyPem: key.privateKeyPem,
          subject: { commonName: planned.commonName, organization: CA_PLAN.organization },
          dnsNames: planned.dnsNames,
          ipAddresses: planned.ipAddresses,
        },
        child,
      );
      const cert = new tls.LocallySignedCert(
        `${name}-${planned.id}`,
        {
          certRequestPem: request.certRequestPem,
          caPrivateKeyPem: caKey.privateKeyPem,
          caCertPem: ca.certPem,
          allowedUses: planned.allowedUses,
          validityPeriodHours: LEAF_VALIDITY_HOURS,
          earlyRenewalHours: LEAF_EARLY_RENEWAL_HOURS,
          setSubjectKeyId: true,
        },
        child,
      );
      certificates[planned.id] = { certPem: cert.certPem, privateKeyPem: pulumi.secret(key.privateKeyPem) };
    }

    const passwords: Partial<Record<PasswordId, pulumi.Output<string>>> = {};
    for (const planned of args.passwords) {
      const password = new random.RandomPassword(`${name}-${planned.id}-password`, { length: planned.length, special: false }, child);
      passwords[planned.id] = pulumi.secret(password.result);
    }

    this.caCertPem = ca.certPem;
    this.certificates = certificates;
    this.passwords = passwords;
    this.registerOutputs({ caCertPem: this.caCertPem });
  }

  /** The value an SSM parameter must hold; keys and passwords come back secret. */
  parameterValue(value: ParameterValue): pulumi.Output<string> {
    switch (value.kind) {
      case "ca-certificate":
        return this.caCertPem;
      case "certificate":
        return this.certificate(value.certificate).certPem;
      case "private-key":
        return this.certificate(value.certificate).privateKeyPem;
      case "password": {
        const password = this.passwords[value.password];
        if (!password) throw new Error(`ClusterPki: no password ${value.password} was planned`);
        return password;
      }
    }
  }

  private certificate(id: string): IssuedCertificate {
    const cert = this.certificates[id];
    if (!cert) throw new Error(`ClusterPki: no certificate ${id} was planned`);
    return cert;
  }
}
