//! pricing: what each product costs. A leaf service: it calls no one.
//!
//! - `GET /api/prices?ids=tea,mug` → `{"instance", "currency", "prices": {"tea": 850, ...}}`
//!   (cents; unknown ids are left out; without `ids`, every price)
//! - `GET /api/prices/{id}` → `{"instance", "currency", "id", "price"}`, or 404

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::server::{self, App, Req, Resp};

pub const CURRENCY: &str = "EUR";

/// Prices in cents, by product id.
const PRICES: &[(&str, u32)] = &[
    ("tea", 850),
    ("coffee", 1290),
    ("mug", 1500),
    ("teapot", 4200),
    ("kettle", 5900),
    ("grinder", 3450),
];

#[derive(Debug, Serialize, Deserialize)]
pub struct Prices {
    pub instance: String,
    pub currency: String,
    pub prices: BTreeMap<String, u32>,
}

pub struct Pricing {
    pub instance: String,
}

impl App for Pricing {
    async fn handle(&self, req: Req) -> Resp {
        if req.method != Method::GET {
            return server::error(StatusCode::METHOD_NOT_ALLOWED, "pricing is read-only: use GET");
        }
        if req.path == "/api/prices" {
            let wanted = req.param("ids");
            let prices = PRICES
                .iter()
                .filter(|(id, _)| wanted.as_deref().is_none_or(|w| w.split(',').any(|x| x == *id)))
                .map(|(id, cents)| (id.to_string(), *cents))
                .collect();
            let body =
                Prices { instance: self.instance.clone(), currency: CURRENCY.into(), prices };
            return server::json_resp(StatusCode::OK, &json!(body));
        }
        if let Some(id) = req.path.strip_prefix("/api/prices/") {
            return match PRICES.iter().find(|(p, _)| *p == id) {
                Some((id, cents)) => server::json_resp(
                    StatusCode::OK,
                    &json!({"instance": self.instance, "currency": CURRENCY, "id": id, "price": cents}),
                ),
                None => server::error(StatusCode::NOT_FOUND, &format!("no price for {id:?}")),
            };
        }
        server::not_found(&req)
    }
}
