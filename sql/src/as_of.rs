//! `as_of()`: the logical time of the snapshot the statement reads.
//!
//! It returns `timestamptz` (Arrow `Timestamp(Millisecond, "UTC")`); `epoch_ms(as_of())`
//! style arithmetic is available through `to_unixtime`/`CAST(... AS BIGINT)`. The engine
//! replaces each call with the pinned snapshot's time before running a statement
//! ([`pin_as_of`]), so every call in a statement, including those inside named views, agrees
//! with the tables. Outside a pinned statement it reads the store's current snapshot.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use wearflow_operators::Time;
use wearflow_sinks::ServingStore;

use crate::batch::TIME_ZONE;

/// The function's SQL name.
pub const AS_OF: &str = "as_of";

/// The `as_of()` scalar function.
pub struct AsOfFunction {
    signature: Signature,
    store: Arc<ServingStore>,
}

impl std::fmt::Debug for AsOfFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsOfFunction").finish_non_exhaustive()
    }
}

impl PartialEq for AsOfFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
    }
}
impl Eq for AsOfFunction {}
impl std::hash::Hash for AsOfFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        AS_OF.hash(state);
    }
}

impl AsOfFunction {
    /// The function over `store`.
    pub fn udf(store: Arc<ServingStore>) -> ScalarUDF {
        ScalarUDF::new_from_impl(AsOfFunction {
            // Volatile so that the optimizer never folds it with a stale value.
            signature: Signature::nullary(Volatility::Volatile),
            store,
        })
    }
}

/// The value `as_of()` returns for a snapshot at `as_of`.
pub fn as_of_value(as_of: Time) -> ScalarValue {
    ScalarValue::TimestampMillisecond(
        Some(i64::try_from(as_of).unwrap_or(i64::MAX)),
        Some(TIME_ZONE.into()),
    )
}

impl ScalarUDFImpl for AsOfFunction {
    fn name(&self) -> &str {
        AS_OF
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Millisecond,
            Some(TIME_ZONE.into()),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(as_of_value(
            self.store.snapshot().as_of,
        )))
    }
}

/// Replaces every `as_of()` call in `plan` (and its subqueries) with the literal `as_of`.
pub fn pin_as_of(plan: LogicalPlan, as_of: Time) -> Result<LogicalPlan> {
    let value = as_of_value(as_of);
    plan.transform_up_with_subqueries(|node| {
        // Keep output names: `SELECT as_of()` still has a column named `as_of()`.
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let saved = names.save(&expr);
            let rewritten = expr.transform_up(|e| match &e {
                Expr::ScalarFunction(call) if call.func.name() == AS_OF => {
                    Ok(Transformed::yes(Expr::Literal(value.clone(), None)))
                }
                _ => Ok(Transformed::no(e)),
            })?;
            Ok(rewritten.update_data(|e| saved.restore(e)))
        })
    })
    .map(|t| t.data)
}
