//! cart: what each user is about to buy, kept in this instance's memory.
//!
//! - `GET /api/carts/{user}` → `{"instance", "user", "items": [{"id", "quantity"}], "count"}`
//! - `POST /api/carts/{user}/items` with `{"id": "tea", "quantity": 1}` → the cart
//! - `DELETE /api/carts/{user}` → the (now empty) cart
//!
//! Carts live in one instance's memory on purpose: with several replicas a user's requests must
//! keep going to the same one, which is what the Service's `ring-hash` balancer on the
//! `x-user-id` header is for (examples/shop/cart.yaml).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::server::{self, App, Req, Resp};

/// Bounds the memory a load test posting to random users can take.
const MAX_CARTS: usize = 10_000;
const MAX_QUANTITY: u32 = 99;

#[derive(Debug, Serialize, Deserialize)]
pub struct Cart {
    pub instance: String,
    pub user: String,
    pub items: Vec<Item>,
    pub count: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub quantity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    id: String,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

pub struct Carts {
    pub instance: String,
    /// user → product id → quantity.
    carts: Mutex<HashMap<String, BTreeMap<String, u32>>>,
}

impl Carts {
    pub fn new(instance: String) -> Carts {
        Carts { instance, carts: Mutex::new(HashMap::new()) }
    }

    fn view(&self, user: &str, items: Option<&BTreeMap<String, u32>>) -> Resp {
        let items: Vec<Item> = items
            .into_iter()
            .flatten()
            .map(|(id, quantity)| Item { id: id.clone(), quantity: *quantity })
            .collect();
        let count = items.iter().map(|i| i.quantity).sum();
        let cart = Cart { instance: self.instance.clone(), user: user.into(), items, count };
        server::json_resp(StatusCode::OK, &json!(cart))
    }
}

/// User names and product ids go into paths and pages: keep them to plain characters.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl App for Carts {
    async fn handle(&self, req: Req) -> Resp {
        let Some(rest) = req.path.strip_prefix("/api/carts/") else {
            return server::not_found(&req);
        };
        let (user, items) = match rest.split_once('/') {
            Some((user, "items")) => (user, true),
            Some(_) => return server::not_found(&req),
            None => (rest, false),
        };
        if !valid_name(user) {
            return server::error(
                StatusCode::BAD_REQUEST,
                "user names are 1 to 64 letters, digits, '-' or '_'",
            );
        }
        // The lock is held only for map operations, never across an await.
        let mut carts = self.carts.lock().unwrap_or_else(PoisonError::into_inner);
        match (&req.method, items) {
            (&Method::GET, false) => self.view(user, carts.get(user)),
            (&Method::DELETE, false) => {
                carts.remove(user);
                self.view(user, None)
            }
            (&Method::POST, true) => {
                let add: AddItem = match serde_json::from_slice(&req.body) {
                    Ok(a) => a,
                    Err(e) => {
                        return server::error(
                            StatusCode::BAD_REQUEST,
                            &format!("expected {{\"id\": \"tea\", \"quantity\": 1}}: {e}"),
                        );
                    }
                };
                if !valid_name(&add.id) || !(1..=MAX_QUANTITY).contains(&add.quantity) {
                    return server::error(
                        StatusCode::BAD_REQUEST,
                        &format!("id must be a plain name and quantity 1 to {MAX_QUANTITY}"),
                    );
                }
                if !carts.contains_key(user) && carts.len() >= MAX_CARTS {
                    return server::error(
                        StatusCode::INSUFFICIENT_STORAGE,
                        &format!("this instance already holds {MAX_CARTS} carts"),
                    );
                }
                let cart = carts.entry(user.to_string()).or_default();
                let q = cart.entry(add.id).or_default();
                *q = (*q + add.quantity).min(MAX_QUANTITY);
                self.view(user, carts.get(user))
            }
            _ => server::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET or DELETE on a cart, POST on its items",
            ),
        }
    }
}
