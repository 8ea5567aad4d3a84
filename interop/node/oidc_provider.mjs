// A real OpenID Connect provider (npm `oidc-provider`) for the operator
// sign-in tests: the device authorization grant for a public client
// `writ-cli`, its stock login and consent pages (any password), and four
// people, three with groups writ maps to roles. With
// WRIT_CONSOLE_REDIRECT set, also a confidential client `writ-console`
// (secret in WRIT_CONSOLE_SECRET) of the authorization code grant, with
// that one redirect URI; PKCE (S256) is required of every client.
//
//   node oidc_provider.mjs PORT   ->  prints "oidc-provider listening on URL"
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const issuer = `http://127.0.0.1:${port}`;

const people = {
  alice: { email: 'alice@example.com', groups: ['staff', 'writ-approvers'] },
  bob: { email: 'bob@example.com', groups: ['writ-admins'] },
  mallory: { email: 'mallory@example.com', groups: ['staff'] },
  eve: { email: 'eve@example.com', groups: [] },
};

const clients = [{
  client_id: 'writ-cli',
  token_endpoint_auth_method: 'none',
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
  response_types: [],
  redirect_uris: [],
}];
if (process.env.WRIT_CONSOLE_REDIRECT) {
  clients.push({
    client_id: 'writ-console',
    client_secret: process.env.WRIT_CONSOLE_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [process.env.WRIT_CONSOLE_REDIRECT],
  });
}

const provider = new Provider(issuer, {
  clients,
  pkce: { required: () => true },
  features: {
    deviceFlow: { enabled: true },
    devInteractions: { enabled: true },
  },
  // Scope-requested claims go into the ID token itself (writ reads them there).
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['groups', 'name'] },
  async findAccount(ctx, id) {
    const who = people[id];
    if (!who) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: who.email, email_verified: true, groups: who.groups, name: id };
      },
    };
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
