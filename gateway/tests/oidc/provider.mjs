// An OpenID Provider for the gateway's tests: oidc-provider (a certified Node.js
// implementation) with its development login and consent pages, one confidential
// client, refresh tokens, and short token lifetimes set from the environment.
//
//   PORT=9000 REDIRECT_URIS=http://127.0.0.1:8080/oauth2/callback \
//   POST_LOGOUT_URIS=http://127.0.0.1:8080/ TOKEN_TTL=5 node provider.mjs
//
// Prints "listening <issuer>" once it accepts connections.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const ttl = Number(process.env.TOKEN_TTL || 60);

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'gateway',
    client_secret: 'gateway-secret',
    redirect_uris: process.env.REDIRECT_URIS.split(','),
    post_logout_redirect_uris: (process.env.POST_LOGOUT_URIS || '').split(',').filter(Boolean),
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    // API access tokens: client_credentials for https://api.test, issued as JWTs (what
    // the gateway's JWT policies verify).
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'read write',
        audience: 'https://api.test',
        accessTokenFormat: 'jwt',
        accessTokenTTL: ttl,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // Every login gets a refresh token (without asking for offline_access).
  issueRefreshToken: async () => true,
  // Keep refresh tokens as issued: the gateway refreshes once per session.
  rotateRefreshToken: false,
  ttl: { AccessToken: ttl, ClientCredentials: ttl, IdToken: ttl, RefreshToken: 3600, Session: 3600, Interaction: 600, Grant: 3600 },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@example.com`, email_verified: true, name: `User ${id}` }),
  }),
  cookies: { keys: ['test-only-cookie-key'] },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
