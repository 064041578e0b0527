//! Orders: line items, shipping, tax and discounts, whose total strongroom computes itself with
//! checked integer arithmetic. A client-sent `amount_total` that differs is refused, a client-sent
//! status ignored. An amendment stores a new version (its own audit entry) unless a payment on
//! the order was confirmed, which locks it.
//! Must never: take a total or status from the client, or change a locked order.

use serde_json::{Map, Value};
use strongroom_types::{Currency, Money, define_id};

use super::{Caller, MAX_AMOUNT, MAX_LINE_ITEMS, MAX_QUANTITY, PaymentsService, check_customer, check_metadata};
use super::{check_text, parse_amount, parse_currency, reject};
use crate::error::DomainError;
use crate::modes::Space;
use crate::ports::payments::{AmendOutcome, OrderRecord, Page};

define_id!(OrderId, OrderKind, "ord");

/// A line of an order as the shop sends it.
#[derive(Debug, Clone, Default)]
pub struct LineItemInput {
    /// The shop's stock-keeping unit.
    pub sku: String,
    /// What it is.
    pub name: String,
    /// How many (at least 1).
    pub quantity: Value,
    /// Price of one, in minor units.
    pub unit_amount: Value,
}

/// A discount as the shop sends it.
#[derive(Debug, Clone, Default)]
pub struct DiscountInput {
    /// The coupon or promotion code, if any.
    pub code: Option<String>,
    /// How much it takes off, in minor units.
    pub amount: Value,
}

/// An order (or the whole of an amendment) as the shop sends it.
#[derive(Debug, Clone, Default)]
pub struct OrderInput {
    /// ISO 4217 code.
    pub currency: String,
    /// The lines.
    pub line_items: Vec<LineItemInput>,
    /// Shipping, in minor units.
    pub shipping_amount: Option<Value>,
    /// Tax, in minor units.
    pub tax_amount: Option<Value>,
    /// Discounts.
    pub discounts: Vec<DiscountInput>,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// The shop's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// The total the client computed, if it sent one: must equal strongroom's.
    pub amount_total: Option<Value>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineItem {
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Quantity.
    pub quantity: u32,
    /// Price of one.
    pub unit_amount: i64,
    /// `quantity × unit_amount`.
    pub amount_total: i64,
}

/// A discount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discount {
    /// Code.
    pub code: Option<String>,
    /// Amount.
    pub amount: i64,
}

/// What an order holds beyond its columns (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderBody {
    /// The lines.
    pub line_items: Vec<LineItem>,
    /// The discounts.
    pub discounts: Vec<Discount>,
    /// Sum of the lines.
    pub amount_subtotal: i64,
    /// Sum of the discounts.
    pub amount_discount: i64,
    /// Shipping.
    pub amount_shipping: i64,
    /// Tax.
    pub amount_tax: i64,
    /// The shop's metadata.
    pub metadata: Option<Map<String, Value>>,
}

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    /// The stored order.
    pub record: OrderRecord,
    /// Its lines, discounts and amounts.
    pub body: OrderBody,
}

fn too_large(pointer: &str) -> DomainError {
    reject("invalid_amount", pointer, format!("the order's total must be at most {MAX_AMOUNT}"))
}

/// Prices an order: every field checked, every sum checked for overflow.
pub fn price(input: &OrderInput) -> Result<(Money, OrderBody), DomainError> {
    let currency: Currency = parse_currency(&input.currency, "/currency")?;
    if input.line_items.is_empty() || input.line_items.len() > MAX_LINE_ITEMS {
        return Err(DomainError::invalid("/line_items", format!("must hold 1 to {MAX_LINE_ITEMS} items")));
    }
    let money = |minor: i64, pointer: &str| Money::new(minor, currency).map_err(|_| too_large(pointer));
    let mut lines = Vec::with_capacity(input.line_items.len());
    let mut subtotal = Money::zero(currency);
    for (i, item) in input.line_items.iter().enumerate() {
        let at = format!("/line_items/{i}");
        let sku_ok = !item.sku.is_empty()
            && item.sku.len() <= 64
            && item.sku.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'/'));
        if !sku_ok {
            return Err(DomainError::invalid(format!("{at}/sku"), "must be 1 to 64 of A-Z, a-z, 0-9, _ . : - /"));
        }
        crate::free_text::check(&format!("{at}/sku"), &item.sku)?;
        if item.name.trim().is_empty() {
            return Err(DomainError::invalid(format!("{at}/name"), "must not be empty"));
        }
        check_text(&item.name, &format!("{at}/name"), 200)?;
        let quantity = match item.quantity.as_i64() {
            Some(q) if (1..=MAX_QUANTITY).contains(&q) => u32::try_from(q).unwrap_or(1),
            _ => {
                return Err(reject(
                    "invalid_quantity",
                    format!("{at}/quantity"),
                    format!("must be an integer from 1 to {MAX_QUANTITY}"),
                ));
            }
        };
        let unit = parse_amount(&item.unit_amount, &format!("{at}/unit_amount"), 0)?;
        let line = money(unit, &at)?.checked_mul(quantity).map_err(|_| too_large(&format!("{at}/quantity")))?;
        subtotal = subtotal.checked_add(line).map_err(|_| too_large("/line_items"))?;
        lines.push(LineItem {
            sku: item.sku.clone(),
            name: item.name.clone(),
            quantity,
            unit_amount: unit,
            amount_total: line.minor(),
        });
    }
    let shipping = match &input.shipping_amount {
        Some(v) => parse_amount(v, "/shipping_amount", 0)?,
        None => 0,
    };
    let tax = match &input.tax_amount {
        Some(v) => parse_amount(v, "/tax_amount", 0)?,
        None => 0,
    };
    if input.discounts.len() > 20 {
        return Err(DomainError::invalid("/discounts", "at most 20 discounts"));
    }
    let mut discounts = Vec::with_capacity(input.discounts.len());
    let mut discount_total = Money::zero(currency);
    for (i, discount) in input.discounts.iter().enumerate() {
        let at = format!("/discounts/{i}");
        if let Some(code) = &discount.code {
            if code.is_empty() {
                return Err(DomainError::invalid(format!("{at}/code"), "must not be empty"));
            }
            check_text(code, &format!("{at}/code"), 64)?;
        }
        let amount = parse_amount(&discount.amount, &format!("{at}/amount"), 0)?;
        discount_total = discount_total.checked_add(money(amount, &at)?).map_err(|_| too_large("/discounts"))?;
        discounts.push(Discount { code: discount.code.clone(), amount });
    }
    let gross = subtotal
        .checked_add(money(shipping, "/shipping_amount")?)
        .and_then(|m| m.checked_add(Money::new(tax, currency)?))
        .map_err(|_| too_large("/line_items"))?;
    let total = gross.checked_sub(discount_total).map_err(|_| {
        reject("invalid_amount", "/discounts", "the discounts exceed the lines, shipping and tax together")
    })?;
    if total.minor() > MAX_AMOUNT {
        return Err(too_large("/line_items"));
    }
    if let Some(sent) = &input.amount_total
        && sent.as_i64() != Some(total.minor())
    {
        return Err(reject(
            "order_total_mismatch",
            "/amount_total",
            format!("does not equal the total strongroom computed from the order ({})", total.minor()),
        ));
    }
    let metadata = input.metadata.clone();
    let body = OrderBody {
        line_items: lines,
        discounts,
        amount_subtotal: subtotal.minor(),
        amount_discount: discount_total.minor(),
        amount_shipping: shipping,
        amount_tax: tax,
        metadata,
    };
    Ok((total, body))
}

fn view(record: OrderRecord) -> Result<OrderView, DomainError> {
    let body: OrderBody = serde_json::from_str(&record.body)
        .map_err(|_| DomainError::Store(crate::StoreError::Other("stored order body is not valid".into())))?;
    Ok(OrderView { record, body })
}

impl PaymentsService {
    /// An order of the caller's space.
    pub(crate) async fn order_in(&self, space: Space<'_>, id: &str) -> Result<OrderRecord, DomainError> {
        if !super::plausible_id(id, "ord") {
            return Err(DomainError::NotFound);
        }
        match self.ports.repo.order(id).await? {
            Some(order) if space.holds(&order.merchant, order.mode) => Ok(order),
            _ => Err(DomainError::NotFound),
        }
    }

    fn checked_parts(input: &OrderInput) -> Result<(Money, OrderBody, Option<String>), DomainError> {
        let (total, body) = price(input)?;
        if let Some(customer) = &input.customer {
            check_customer(customer, "/customer")?;
        }
        check_metadata(input.metadata.as_ref(), "/metadata")?;
        let text = serde_json::to_string(&body)
            .map_err(|_| DomainError::Store(crate::StoreError::Other("order body".into())))?;
        Ok((total, body, Some(text)))
    }

    /// Creates an order (version 1).
    pub async fn create_order(&self, caller: Caller<'_>, input: OrderInput) -> Result<OrderView, DomainError> {
        let space = caller.principal.space();
        let (total, body, text) = Self::checked_parts(&input)?;
        let now = self.ports.clock.now();
        let record = OrderRecord {
            id: OrderId::generate_at(self.ports.entropy.as_ref(), now.unix_millis()).to_string(),
            merchant: space.merchant.clone(),
            mode: space.mode,
            version: 1,
            total,
            body: text.unwrap_or_default(),
            customer: input.customer.clone(),
            locked_at: None,
            created_at: now,
            updated_at: now,
        };
        self.ports.repo.insert_order(&record, &[]).await?;
        self.ports.audit.record(caller.event("order.created", "order", &record.id)).await?;
        Ok(OrderView { record, body })
    }

    /// Amends an order: a new version, unless a payment on it was confirmed.
    pub async fn amend_order(&self, caller: Caller<'_>, id: &str, input: OrderInput) -> Result<OrderView, DomainError> {
        let before = self.order_in(caller.principal.space(), id).await?;
        if before.locked_at.is_some() {
            return Err(locked());
        }
        let (total, body, text) = Self::checked_parts(&input)?;
        let record = OrderRecord {
            version: before.version.saturating_add(1),
            total,
            body: text.unwrap_or_default(),
            customer: input.customer.clone(),
            updated_at: self.ports.clock.now(),
            ..before.clone()
        };
        match self.ports.repo.amend_order(&record, before.version, &[]).await? {
            AmendOutcome::Amended => {}
            AmendOutcome::Locked => return Err(locked()),
            AmendOutcome::Stale => {
                return Err(DomainError::Conflict(
                    "order_changed",
                    "the order was amended meanwhile; read it and amend again",
                ));
            }
        }
        self.ports.audit.record(caller.event("order.amended", "order", &record.id)).await?;
        Ok(OrderView { record, body })
    }

    /// One order.
    pub async fn order(&self, space: Space<'_>, id: &str) -> Result<OrderView, DomainError> {
        view(self.order_in(space, id).await?)
    }

    /// Orders of the caller's space, newest first.
    pub async fn orders(
        &self,
        space: Space<'_>,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<OrderView>, bool), DomainError> {
        let limit = super::page_limit(limit)?;
        super::check_cursor(starting_after, "ord")?;
        let page = Page { merchant: space.merchant, mode: space.mode, starting_after, limit: limit + 1 };
        let mut found = self.ports.repo.orders(page).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok((found.into_iter().map(view).collect::<Result<_, _>>()?, more))
    }
}

fn locked() -> DomainError {
    DomainError::Conflict("order_locked", "a payment on this order was confirmed; the order cannot change any more")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn line(quantity: Value, unit: Value) -> LineItemInput {
        LineItemInput { sku: "SKU-1".into(), name: "Mug".into(), quantity, unit_amount: unit }
    }

    fn order(lines: Vec<LineItemInput>) -> OrderInput {
        OrderInput { currency: "eur".into(), line_items: lines, ..Default::default() }
    }

    fn code(err: DomainError) -> String {
        match err {
            DomainError::Rejected { code, errors } => format!("{code} {}", errors[0].pointer),
            DomainError::Validation(errors) => format!("validation_failed {}", errors[0].pointer),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn totals_add_up() {
        let mut input = order(vec![line(json!(2), json!(1250)), line(json!(1), json!(500))]);
        input.shipping_amount = Some(json!(495));
        input.tax_amount = Some(json!(570));
        input.discounts = vec![DiscountInput { code: Some("WELCOME".into()), amount: json!(300) }];
        let (total, body) = price(&input).unwrap();
        assert_eq!(total.minor(), 2500 + 500 + 495 + 570 - 300);
        assert_eq!(body.amount_subtotal, 3000);
        assert_eq!(body.line_items[0].amount_total, 2500);
        input.amount_total = Some(json!(3765));
        assert!(price(&input).is_ok());
        input.amount_total = Some(json!(3764));
        assert_eq!(code(price(&input).unwrap_err()), "order_total_mismatch /amount_total");
    }

    #[test]
    fn bad_lines_name_their_field() {
        assert_eq!(
            code(price(&order(vec![line(json!(0), json!(1))])).unwrap_err()),
            "invalid_quantity /line_items/0/quantity"
        );
        assert_eq!(
            code(price(&order(vec![line(json!(1), json!(-5))])).unwrap_err()),
            "invalid_amount /line_items/0/unit_amount"
        );
        assert_eq!(code(price(&order(vec![])).unwrap_err()), "validation_failed /line_items");
        let mut unknown = order(vec![line(json!(1), json!(1))]);
        unknown.currency = "xyz".into();
        assert_eq!(code(price(&unknown).unwrap_err()), "unknown_currency /currency");
        let many = (0..100).map(|_| line(json!(MAX_QUANTITY), json!(MAX_AMOUNT))).collect();
        assert!(code(price(&order(many)).unwrap_err()).starts_with("invalid_amount"));
        let mut over = order(vec![line(json!(1), json!(100))]);
        over.discounts = vec![DiscountInput { code: None, amount: json!(101) }];
        assert_eq!(code(price(&over).unwrap_err()), "invalid_amount /discounts");
        let card = LineItemInput { name: "4242 4242 4242 4242".into(), ..line(json!(1), json!(1)) };
        assert_eq!(code(price(&order(vec![card])).unwrap_err()), "card_number_in_free_text /line_items/0/name");
    }

    proptest! {
        #[test]
        fn the_total_is_the_exact_integer_sum(
            lines in proptest::collection::vec((1i64..=MAX_QUANTITY, 0i64..=10_000_000), 1..10),
            shipping in 0i64..100_000, tax in 0i64..100_000, discount in 0i64..100_000,
        ) {
            let mut input = order(lines.iter().map(|(q, u)| line(json!(q), json!(u))).collect());
            input.shipping_amount = Some(json!(shipping));
            input.tax_amount = Some(json!(tax));
            input.discounts = vec![DiscountInput { code: None, amount: json!(discount) }];
            let expected = lines.iter().map(|(q, u)| i128::from(*q) * i128::from(*u)).sum::<i128>()
                + i128::from(shipping) + i128::from(tax) - i128::from(discount);
            match price(&input) {
                Ok((total, _)) => prop_assert_eq!(i128::from(total.minor()), expected),
                Err(_) => prop_assert!(expected < 0 || expected > i128::from(MAX_AMOUNT)),
            }
        }
    }
}
