//! The simulated issuer's 3-D Secure challenge: the page a payer's browser opens from
//! `next_action.redirect_to_url`, and its Approve and Reject answers.

use crate::error::ApiError;
use crate::input::{base_url, parse_payment_id, query_params};
use crate::request_ids::RequestIds;
use crate::service::payments::{act, Actor};
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use settle_shared::domain::money::Currency;
use settle_shared::domain::payment::{Action, PaymentStatus};
use subtle::ConstantTimeEq;

fn challenge_param(raw: Option<&str>) -> Result<String, ApiError> {
    let params = query_params(raw, &["challenge"])?;
    params.get("challenge").cloned().ok_or_else(|| ApiError::field("challenge", "is required"))
}

fn html(status: StatusCode, body: String) -> Response {
    let csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
    (status, [(header::CONTENT_SECURITY_POLICY, csp), (header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn format_amount(minor: i64, currency: &str) -> String {
    let exponent = currency.parse::<Currency>().map_or(2, |c| u32::from(c.exponent()));
    if exponent == 0 {
        return format!("{minor} {currency}");
    }
    let scale = 10_i64.pow(exponent);
    format!("{}.{:0width$} {currency}", minor / scale, minor % scale, width = exponent as usize)
}

/// `GET /v1/payments/{id}/3ds?challenge=…`: the simulated issuer's challenge page.
pub async fn challenge_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    let secret = challenge_param(raw.as_deref())?;
    let p = state.payments().get(id.as_str()).await?.ok_or(ApiError::NotFound("payment"))?;
    let valid = p.challenge.as_deref().is_some_and(|c| bool::from(c.as_bytes().ct_eq(secret.as_bytes())));
    if !valid || p.status != PaymentStatus::RequiresAction {
        return Err(ApiError::NotFound("challenge"));
    }
    // Ids, amounts and the hex secret contain no markup characters.
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Settle 3-D Secure</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}button{{font-size:1.1rem;padding:.5rem 1.5rem;margin:.5rem}}</style></head>
<body><h1>Confirm this payment</h1>
<p>Test issuer challenge for payment <code>{id}</code>: <strong>{amount}</strong> to <code>{merchant}</code>, card ending {last4}.</p>
<form method="post" action="/v1/payments/{id}/3ds/approve?challenge={secret}"><button id="approve" type="submit">Approve</button></form>
<form method="post" action="/v1/payments/{id}/3ds/reject?challenge={secret}"><button id="reject" type="submit">Reject</button></form>
</body></html>"#,
        amount = format_amount(p.amount, &p.currency),
        merchant = p.merchant_id,
        last4 = p.card.last4,
    );
    Ok(html(StatusCode::OK, page))
}

/// `POST /v1/payments/{id}/3ds/{approve|reject}?challenge=…`, posted by the page.
pub async fn challenge_answer(
    State(state): State<AppState>,
    Path((id, answer)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ids: RequestIds,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    let secret = challenge_param(raw.as_deref())?;
    let action = match answer.as_str() {
        "approve" => Action::ApproveChallenge,
        "reject" => Action::RejectChallenge,
        _ => return Err(ApiError::NotFound("action")),
    };
    let p =
        act(&state, id.as_str(), Actor::Challenge(&secret), |_| action, &ids.origin(None), &base_url(&headers)).await?;
    let outcome = match (p.status, p.failure_code) {
        (PaymentStatus::Failed, Some(code)) => {
            format!("Payment failed ({}).", serde_json::to_value(code).unwrap_or_default().as_str().unwrap_or("failed"))
        }
        (status, _) => format!("Payment {}.", status.as_str().replace('_', " ")),
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Settle 3-D Secure</title></head>\
         <body><h1 id=\"outcome\" data-status=\"{status}\">{outcome}</h1><p>You can close this window.</p></body></html>",
        status = p.status.as_str()
    );
    Ok(html(StatusCode::OK, page))
}
