//! frontend: the shop's page. It asks catalog (which asks pricing) and cart at the same time
//! and renders the answers on the server.
//!
//! - `GET /?user=alice` → the HTML page (user `guest` when not given)
//! - `GET /api/home?user=alice` → the same data as JSON
//! - `POST /cart` (form `id=tea&user=alice`) → adds to the cart, then `303` back to the page
//!
//! Catalog is essential: without it the page is 502 (504 on timeout) with an explanation.
//! Cart is not: without it the page is served with the cart count unknown.

use std::fmt::Write as _;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::cart::{self, Cart};
use crate::catalog::Products;
use crate::mesh::{CallError, Mesh, Reply};
use crate::server::{self, App, Req, Resp};

pub struct Frontend {
    pub instance: String,
    pub mesh: Mesh,
}

/// Everything the page shows, also served as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Home {
    user: String,
    currency: String,
    products: Vec<crate::catalog::Product>,
    /// `None` when cart could not be asked.
    cart_count: Option<u32>,
    /// Which instance of each service answered, and how long the calls took: reload the page
    /// and watch them change as the sidecars balance across replicas.
    served_by: Vec<Part>,
    /// What went wrong on the way, for the page's warning box.
    errors: Vec<String>,
    #[serde(skip)]
    status: StatusCode,
}

#[derive(Debug, Serialize)]
struct Part {
    service: &'static str,
    instance: Option<String>,
    /// Milliseconds, for the calls this frontend made.
    ms: Option<f64>,
    /// Who called it, when not this frontend.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'static str>,
}

impl App for Frontend {
    async fn handle(&self, req: Req) -> Resp {
        match (&req.method, req.path.as_str()) {
            (&Method::GET, "/") => match user_of(req.param("user")) {
                Some(user) => {
                    let home = self.home(&req, user).await;
                    server::html(home.status, render(&home))
                }
                None => bad_user(),
            },
            (&Method::GET, "/api/home") => match user_of(req.param("user")) {
                Some(user) => {
                    let home = self.home(&req, user).await;
                    server::json_resp(home.status, &json!(home))
                }
                None => bad_user(),
            },
            (&Method::POST, "/cart") => self.add_to_cart(&req).await,
            (_, "/" | "/api/home" | "/cart") => {
                server::error(StatusCode::METHOD_NOT_ALLOWED, "use GET on pages, POST on /cart")
            }
            _ => server::not_found(&req),
        }
    }
}

impl Frontend {
    async fn home(&self, req: &Req, user: String) -> Home {
        let catalog_headers = req.propagated();
        // The cart's balancer hashes this header, so a user keeps landing on the instance that
        // holds their cart.
        let cart_headers: Vec<_> =
            req.propagated().into_iter().chain([("x-user-id", user.clone())]).collect();

        let cart_path = format!("/api/carts/{user}");
        let (products, cart) = tokio::join!(
            self.mesh.get_json::<Products>("catalog", "/api/products", &catalog_headers),
            self.mesh.get_json::<Cart>("cart", &cart_path, &cart_headers),
        );

        let mut home = Home {
            user,
            currency: crate::pricing::CURRENCY.into(),
            products: Vec::new(),
            cart_count: None,
            served_by: vec![part("frontend", Some(self.instance.clone()), None)],
            errors: Vec::new(),
            status: StatusCode::OK,
        };
        match products {
            Ok(Reply { body, instance, elapsed }) => {
                home.served_by.push(part("catalog", instance, Some(elapsed)));
                let pricing = part("pricing", body.pricing_instance, None);
                home.served_by.push(Part { via: Some("catalog"), ..pricing });
                home.errors.extend(body.pricing_error);
                home.currency = body.currency;
                home.products = body.products;
            }
            Err(e) => {
                home.served_by.push(part("catalog", None, None));
                home.status = e.status();
                home.errors.push(e.to_string());
            }
        }
        match cart {
            Ok(Reply { body, instance, elapsed }) => {
                home.served_by.push(part("cart", instance, Some(elapsed)));
                home.cart_count = Some(body.count);
            }
            Err(e) => {
                home.served_by.push(part("cart", None, None));
                home.errors.push(e.to_string());
            }
        }
        home
    }

    async fn add_to_cart(&self, req: &Req) -> Resp {
        let form = String::from_utf8_lossy(&req.body);
        let user = match user_of(server::form_value(&form, "user")) {
            Some(u) => u,
            None => return bad_user(),
        };
        let id = server::form_value(&form, "id").unwrap_or_default();
        if !cart::valid_name(&id) {
            return server::error(StatusCode::BAD_REQUEST, "the form needs a product id");
        }
        let mut headers = vec![("x-user-id", user.clone())];
        headers.extend(req.propagated());
        let added: Result<Reply<Cart>, CallError> = self
            .mesh
            .call_json(
                Method::POST,
                "cart",
                &format!("/api/carts/{user}/items"),
                &headers,
                Some(json!({"id": id, "quantity": 1})),
            )
            .await;
        match added {
            Ok(_) if user == "guest" => server::redirect("/"),
            Ok(_) => server::redirect(&format!("/?user={user}")),
            Err(e) => server::html(
                e.status(),
                format!(
                    "<!doctype html><title>Not added</title><p>Could not add to the cart: {}</p>\
                     <p><a href=\"/\">Back to the shop</a></p>",
                    escape(&e.to_string())
                ),
            ),
        }
    }
}

fn part(service: &'static str, instance: Option<String>, elapsed: Option<Duration>) -> Part {
    let ms = elapsed.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
    Part { service, instance, ms, via: None }
}

/// The user a request is for: `guest` unless named, `None` for a name that is not plain.
fn user_of(param: Option<String>) -> Option<String> {
    let user = param.filter(|u| !u.is_empty()).unwrap_or_else(|| "guest".into());
    cart::valid_name(&user).then_some(user)
}

fn bad_user() -> Resp {
    server::error(StatusCode::BAD_REQUEST, "user names are 1 to 64 letters, digits, '-' or '_'")
}

fn price(cents: u32, currency: &str) -> String {
    format!("{}.{:02} {}", cents / 100, cents % 100, escape(currency))
}

/// Everything shown comes from other services or the query string: escape it all.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#222}
header{display:flex;justify-content:space-between;align-items:baseline;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:1rem;margin:1.5rem 0}
.card{border:1px solid #ddd;border-radius:.5rem;padding:0 1rem 1rem}
.price{font-weight:bold}
.warn{background:#fff4e5;border:1px solid #f0b429;border-radius:.5rem;padding:.5rem 1rem;margin-top:1rem}
footer{border-top:1px solid #ddd;font-size:.85rem;color:#555}
footer td{padding:.1rem 1.5rem .1rem 0}";

fn render(home: &Home) -> String {
    let user = escape(&home.user);
    let cart = home.cart_count.map_or("?".to_string(), |c| c.to_string());
    let mut page = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>weft demo shop</title><style>{STYLE}</style></head><body>\n\
         <header><h1>weft demo shop</h1><div>Cart (<b id=\"cart-count\">{cart}</b>) &middot; {user}</div></header>\n"
    );
    if !home.errors.is_empty() {
        page.push_str("<div class=\"warn\"><b>Some services did not answer:</b><ul>");
        for e in &home.errors {
            let _ = write!(page, "<li>{}</li>", escape(e));
        }
        page.push_str("</ul></div>\n");
    }
    page.push_str("<div class=\"grid\">\n");
    for p in &home.products {
        let cost = p.price.map_or("price unavailable".to_string(), |c| price(c, &home.currency));
        let _ = writeln!(
            page,
            "<div class=\"card\"><h2>{name}</h2><p>{desc}</p><p class=\"price\">{cost}</p>\
             <form method=\"post\" action=\"/cart\"><input type=\"hidden\" name=\"id\" value=\"{id}\">\
             <input type=\"hidden\" name=\"user\" value=\"{user}\"><button>Add to cart</button></form></div>",
            name = escape(&p.name),
            desc = escape(&p.description),
            id = escape(&p.id),
        );
    }
    page.push_str("</div>\n<footer><p>Served by (reload to watch requests move between replicas):</p><table>\n");
    for part in &home.served_by {
        let instance = part.instance.as_deref().map_or("-".to_string(), escape);
        let ms = match (part.ms, part.via) {
            (Some(ms), _) => format!("{ms} ms"),
            (None, Some(via)) => format!("via {via}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td><code class=\"instance\">{instance}</code></td><td>{ms}</td></tr>",
            part.service
        );
    }
    page.push_str("</table></footer>\n</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn prices_are_cents() {
        assert_eq!(price(850, "EUR"), "8.50 EUR");
        assert_eq!(price(5, "EUR"), "0.05 EUR");
    }

    #[test]
    fn bad_user_names_are_refused() {
        assert_eq!(user_of(None).unwrap(), "guest");
        assert_eq!(user_of(Some("alice_1".into())).unwrap(), "alice_1");
        assert_eq!(user_of(Some("<script>".into())), None);
    }
}
