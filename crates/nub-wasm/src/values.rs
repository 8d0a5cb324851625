//! Typed arguments and results: [`WasmParams`] turns a tuple of Rust
//! numbers into the [`Value`]s a call sends, [`WasmResults`] turns the
//! [`Value`]s a call returns back into a tuple (or one number), checking
//! their types.

use nub_wasm_abi::{ValType, Value};

/// A Rust type that is one WebAssembly number type.
pub trait WasmType: Sized {
    /// Its WebAssembly type.
    const TYPE: ValType;
    /// As a [`Value`].
    fn into_value(self) -> Value;
    /// From a [`Value`] of type [`WasmType::TYPE`] (`None` for another type).
    fn from_value(value: &Value) -> Option<Self>;
}

impl WasmType for i32 {
    const TYPE: ValType = ValType::I32;
    fn into_value(self) -> Value {
        Value::I32(self)
    }
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::I32(v) => Some(*v),
            _ => None,
        }
    }
}

impl WasmType for u32 {
    const TYPE: ValType = ValType::I32;
    fn into_value(self) -> Value {
        Value::I32(self.cast_signed())
    }
    fn from_value(value: &Value) -> Option<Self> {
        i32::from_value(value).map(i32::cast_unsigned)
    }
}

impl WasmType for i64 {
    const TYPE: ValType = ValType::I64;
    fn into_value(self) -> Value {
        Value::I64(self)
    }
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::I64(v) => Some(*v),
            _ => None,
        }
    }
}

impl WasmType for u64 {
    const TYPE: ValType = ValType::I64;
    fn into_value(self) -> Value {
        Value::I64(self.cast_signed())
    }
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).map(i64::cast_unsigned)
    }
}

impl WasmType for f32 {
    const TYPE: ValType = ValType::F32;
    fn into_value(self) -> Value {
        Value::F32(self.to_bits())
    }
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::F32(bits) => Some(f32::from_bits(*bits)),
            _ => None,
        }
    }
}

impl WasmType for f64 {
    const TYPE: ValType = ValType::F64;
    fn into_value(self) -> Value {
        Value::F64(self.to_bits())
    }
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::F64(bits) => Some(f64::from_bits(*bits)),
            _ => None,
        }
    }
}

/// Arguments of a call: `()`, one [`WasmType`], or a tuple of them.
pub trait WasmParams {
    /// The values, in order.
    fn into_values(self) -> Vec<Value>;
}

/// Results of a call: `()`, one [`WasmType`], or a tuple of them.
pub trait WasmResults: Sized {
    /// The types expected, in order.
    fn types() -> Vec<ValType>;
    /// The results, if `values` has exactly those types.
    fn from_values(values: &[Value]) -> Option<Self>;
}

impl<T: WasmType> WasmParams for T {
    fn into_values(self) -> Vec<Value> {
        vec![self.into_value()]
    }
}

impl<T: WasmType> WasmResults for T {
    fn types() -> Vec<ValType> {
        vec![T::TYPE]
    }
    fn from_values(values: &[Value]) -> Option<Self> {
        match values {
            [v] => T::from_value(v),
            _ => None,
        }
    }
}

macro_rules! tuples {
    ($( ($($t:ident),*) )*) => {$(
        impl<$($t: WasmType),*> WasmParams for ($($t,)*) {
            #[allow(non_snake_case)]
            fn into_values(self) -> Vec<Value> {
                let ($($t,)*) = self;
                vec![$($t.into_value()),*]
            }
        }

        impl<$($t: WasmType),*> WasmResults for ($($t,)*) {
            fn types() -> Vec<ValType> {
                vec![$($t::TYPE),*]
            }
            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn from_values(values: &[Value]) -> Option<Self> {
                let mut it = values.iter();
                $(let $t = $t::from_value(it.next()?)?;)*
                if it.next().is_some() {
                    return None;
                }
                Some(($($t,)*))
            }
        }
    )*};
}

tuples! {
    ()
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
    (A, B, C, D, E, F, G)
    (A, B, C, D, E, F, G, H)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_round_trip_and_check_types() {
        let values = (1i32, 2i64, 1.5f32, -0.0f64).into_values();
        assert_eq!(
            values,
            vec![
                Value::I32(1),
                Value::I64(2),
                Value::F32(1.5f32.to_bits()),
                Value::F64((-0.0f64).to_bits())
            ]
        );
        let back = <(i32, i64, f32, f64)>::from_values(&values).unwrap();
        assert_eq!(back.0, 1);
        assert_eq!(back.3.to_bits(), (-0.0f64).to_bits());
        assert_eq!(<(i32, i64)>::from_values(&values), None);
        assert_eq!(<i64>::from_values(&[Value::I32(1)]), None);
        assert_eq!(<()>::from_values(&[]), Some(()));
        assert_eq!(<()>::from_values(&[Value::I32(1)]), None);
        assert_eq!(().into_values(), vec![]);
        assert_eq!(u32::from_values(&[Value::I32(-1)]), Some(u32::MAX));
        assert_eq!(<(i32, f64)>::types(), vec![ValType::I32, ValType::F64]);
    }

    #[test]
    fn nan_bits_survive() {
        let nan = f64::from_bits(0x7ff8_dead_beef_0001);
        let v = nan.into_value();
        assert_eq!(
            f64::from_values(&[v]).unwrap().to_bits(),
            0x7ff8_dead_beef_0001
        );
    }
}
