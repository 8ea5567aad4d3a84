// JWT-SVIDs from the SPIFFE Workload API (`writ node`, SPIRE), over gRPC on
// its Unix socket, with @grpc/grpc-js (an optional peer dependency).

import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { WritError } from "./errors.js";

export interface WorkloadApiOptions {
  /** `unix:///run/writ/agent.sock`; by default `SPIFFE_ENDPOINT_SOCKET`. */
  endpoint?: string;
  /** The audience: writ's issuer (the broker's URL). */
  audience: string;
  /** Only this SPIFFE ID, when the workload has several. */
  spiffeId?: string;
  timeoutMs?: number;
}

interface JwtSvid {
  spiffe_id: string;
  svid: string;
}

type FetchJwtSvid = (
  req: { audience: string[]; spiffe_id: string },
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: { svids: JwtSvid[] }) => void,
) => void;

const PROTO = fileURLToPath(new URL("../proto/workload_jwt.proto", import.meta.url));

/** Fetches one JWT-SVID for `audience` from the Workload API. */
export async function fetchJwtSvid(o: WorkloadApiOptions): Promise<string> {
  const endpoint = o.endpoint ?? process.env.SPIFFE_ENDPOINT_SOCKET;
  if (!endpoint) throw new WritError("no Workload API endpoint (give endpoint, or set SPIFFE_ENDPOINT_SOCKET)");
  const def = protoLoader.loadSync(PROTO, { keepCase: true, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    SpiffeWorkloadAPI: new (target: string, creds: grpc.ChannelCredentials) => grpc.Client & { FetchJWTSVID: FetchJwtSvid };
  };
  const client = new pkg.SpiffeWorkloadAPI(endpoint, grpc.credentials.createInsecure());
  try {
    const md = new grpc.Metadata();
    md.set("workload.spiffe.io", "true"); // the header the Workload API requires
    const res = await new Promise<{ svids: JwtSvid[] }>((resolve, reject) => {
      client.FetchJWTSVID(
        { audience: [o.audience], spiffe_id: o.spiffeId ?? "" },
        md,
        { deadline: Date.now() + (o.timeoutMs ?? 10_000) },
        (err, r) => (err || !r ? reject(err ?? new Error("empty answer")) : resolve(r)),
      );
    });
    const svid = res.svids[0]?.svid;
    if (!svid) throw new WritError("the Workload API gave no JWT-SVID");
    return svid;
  } catch (e) {
    if (e instanceof WritError) throw e;
    const err = e as grpc.ServiceError;
    throw new WritError(`Workload API ${endpoint}: ${err.details ?? err.message}`, { code: String(err.code ?? ""), cause: e });
  } finally {
    client.close();
  }
}

/** A credential callback for `attestation: { jwtSvid: workloadApiJwtSvid({...}) }`: a fresh SVID per attestation. */
export function workloadApiJwtSvid(o: WorkloadApiOptions): () => Promise<string> {
  return () => fetchJwtSvid(o);
}
