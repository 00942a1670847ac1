//! catalog: the products, with their prices from pricing.
//!
//! - `GET /api/products` → `{"instance", "pricingInstance", "pricingError", "currency",
//!   "products": [{"id", "name", "description", "price"}]}`
//! - `GET /api/products/{id}` → one product, or 404
//!
//! When pricing fails the products are still listed, with `price: null` and the reason in
//! `pricingError`: prices are worth waiting for, not worth failing the whole page for.

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::mesh::Mesh;
use crate::pricing::Prices;
use crate::server::{self, App, Req, Resp};

/// id, name, description.
const PRODUCTS: &[(&str, &str, &str)] = &[
    ("tea", "Green tea", "Sencha, 100 g of loose leaves"),
    ("coffee", "Coffee beans", "Medium roast, 250 g"),
    ("mug", "Enamel mug", "350 ml, chips give it character"),
    ("teapot", "Cast-iron teapot", "0.8 l, keeps the second cup warm"),
    ("kettle", "Gooseneck kettle", "For a slow, even pour"),
    ("grinder", "Hand grinder", "Ceramic burrs, 20 settings"),
];

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Products {
    pub instance: String,
    pub pricing_instance: Option<String>,
    pub pricing_error: Option<String>,
    pub currency: String,
    pub products: Vec<Product>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Cents; `None` when pricing could not be asked.
    pub price: Option<u32>,
}

pub struct Catalog {
    pub instance: String,
    pub mesh: Mesh,
}

impl App for Catalog {
    async fn handle(&self, req: Req) -> Resp {
        if req.method != Method::GET {
            return server::error(StatusCode::METHOD_NOT_ALLOWED, "catalog is read-only: use GET");
        }
        let single = req.path != "/api/products";
        let wanted: Vec<_> = if !single {
            PRODUCTS.iter().collect()
        } else if let Some(id) = req.path.strip_prefix("/api/products/") {
            match PRODUCTS.iter().find(|(p, ..)| *p == id) {
                Some(p) => vec![p],
                None => return server::error(StatusCode::NOT_FOUND, &format!("no product {id:?}")),
            }
        } else {
            return server::not_found(&req);
        };

        let ids: Vec<&str> = wanted.iter().map(|(id, ..)| *id).collect();
        let headers = req.propagated();
        let priced = self
            .mesh
            .get_json::<Prices>("pricing", &format!("/api/prices?ids={}", ids.join(",")), &headers)
            .await;
        let (prices, currency, pricing_instance, pricing_error) = match priced {
            Ok(reply) => (reply.body.prices, reply.body.currency, reply.instance, None),
            Err(e) => (
                Default::default(),
                crate::pricing::CURRENCY.to_string(),
                None,
                Some(e.to_string()),
            ),
        };

        let products: Vec<Product> = wanted
            .iter()
            .map(|(id, name, description)| Product {
                id: id.to_string(),
                name: name.to_string(),
                description: description.to_string(),
                price: prices.get(*id).copied(),
            })
            .collect();
        if single && let Some(product) = products.first() {
            let mut one = json!(product);
            one["instance"] = json!(self.instance);
            one["pricingInstance"] = json!(pricing_instance);
            one["pricingError"] = json!(pricing_error);
            return server::json_resp(StatusCode::OK, &one);
        }
        let body = Products {
            instance: self.instance.clone(),
            pricing_instance,
            pricing_error,
            currency,
            products,
        };
        server::json_resp(StatusCode::OK, &json!(body))
    }
}
