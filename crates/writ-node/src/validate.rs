//! Checking a JWT-SVID against the trust domain's JWT authorities.

/// The claims of a JWT-SVID of `trust_domain` valid for `audience`, signed
/// by a key of `jwks` (ES256, the key named by `kid`).
pub fn jwt_svid(
    token: &str,
    audience: &str,
    jwks: &[u8],
    trust_domain: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("malformed JWT-SVID: {e}"))?;
    if header.alg != jsonwebtoken::Algorithm::ES256 {
        return Err(format!("unsupported algorithm {:?}", header.alg));
    }
    let kid = header.kid.ok_or("the JWT-SVID names no key")?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(jwks).map_err(|e| format!("bad JWT bundle: {e}"))?;
    let jwk = set
        .find(&kid)
        .ok_or("the JWT-SVID's key is not in the bundle")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "sub", "aud"]);
    v.leeway = 0;
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
        .map_err(|e| format!("JWT-SVID rejected: {e}"))?;
    let sub = data
        .claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .ok_or("no sub")?;
    let in_domain = sub
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        == Some(trust_domain);
    if !in_domain {
        return Err(format!("{sub} is not in trust domain {trust_domain}"));
    }
    Ok(data.claims)
}

/// JSON claims as a protobuf `Struct`.
pub fn to_struct(claims: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: claims
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
