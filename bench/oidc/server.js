// The peer for bench/issuance.sh: node oidc-provider issuing access tokens
// with the client-credentials grant to one confidential client
// (client_secret_basic), on PORT. FORMAT=jwt (the default): JWT access
// tokens signed with ALG (Ed25519 or ES256). FORMAT=opaque: opaque tokens
// kept in the provider's in-memory store, which its introspection
// endpoint (/token/introspection) answers for.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 18800);
const alg = process.env.ALG || 'Ed25519';
const format = process.env.FORMAT || 'jwt';
const audience = 'https://tickets.example.com';
const { privateKey } = alg === 'ES256'
  ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('ed25519');
const key = { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: 'bench' };
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [key] },
  clients: [{
    client_id: 'bench',
    client_secret: 'bench-client-secret-0123456789abcdef',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    // Otherwise the access token falls back to RS256.
    id_token_signed_response_alg: alg,
  }],
  enabledJWA: { idTokenSigningAlgValues: [alg] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'read',
        audience,
        accessTokenTTL: 600,
        accessTokenFormat: format,
        jwt: { sign: { alg } },
      }),
    },
  },
});
provider.listen(port, () => console.log(`oidc-provider listening on ${issuer}`));
