//! ACK and its actions (SPOE.txt §3.2.6, §3.4).

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::reader::Reader;
use crate::{varint, DecodeError, TypedData};

/// The scope of a variable set by an action. HAProxy names the variable
/// `<scope>.<var-prefix>.<name>` (e.g. `txn.myagent.score`).
///
/// An open newtype: unknown scopes are kept as read.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VarScope(pub u8);

impl VarScope {
    /// 0: `proc`, the whole process.
    pub const PROCESS: Self = Self(0);
    /// 1: `sess`, the client session.
    pub const SESSION: Self = Self(1);
    /// 2: `txn`, the HTTP transaction.
    pub const TRANSACTION: Self = Self(2);
    /// 3: `req`, the request.
    pub const REQUEST: Self = Self(3);
    /// 4: `res`, the response.
    pub const RESPONSE: Self = Self(4);

    /// The scope's prefix in HAProxy variable names (`proc`, `sess`, `txn`, `req`, `res`).
    pub const fn prefix(self) -> &'static str {
        match self.0 {
            0 => "proc",
            1 => "sess",
            2 => "txn",
            3 => "req",
            4 => "res",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for VarScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VarScope::{}({})", self.prefix(), self.0)
    }
}

/// One action of an ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SET-VAR (type 1): set a variable to a value.
    SetVar {
        /// The variable's scope.
        scope: VarScope,
        /// The variable's name, without scope or prefix.
        name: Bytes,
        /// The value.
        value: TypedData,
    },
    /// UNSET-VAR (type 2): remove a variable.
    UnsetVar {
        /// The variable's scope.
        scope: VarScope,
        /// The variable's name.
        name: Bytes,
    },
}

impl Action {
    const SET_VAR: u8 = 1;
    const UNSET_VAR: u8 = 2;

    fn encoded_len(&self) -> usize {
        match self {
            Self::SetVar { name, value, .. } => {
                3 + varint::encoded_len(name.len() as u64) + name.len() + value.encoded_len()
            }
            Self::UnsetVar { name, .. } => 3 + varint::encoded_len(name.len() as u64) + name.len(),
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::SetVar { scope, name, value } => {
                buf.put_slice(&[Self::SET_VAR, 3, scope.0]);
                varint::encode(name.len() as u64, buf);
                buf.put_slice(name);
                value.encode(buf);
            }
            Self::UnsetVar { scope, name } => {
                buf.put_slice(&[Self::UNSET_VAR, 2, scope.0]);
                varint::encode(name.len() as u64, buf);
                buf.put_slice(name);
            }
        }
    }
}

/// The agent's answer to a NOTIFY: a list of actions, possibly empty.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Ack, VarScope};
/// let ack = Ack::new()
///     .set_var(VarScope::TRANSACTION, "ip_score", 10i32)
///     .unset_var(VarScope::SESSION, "old");
/// assert_eq!(ack.actions.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// The actions, in order.
    pub actions: Vec<Action>,
}

impl Ack {
    /// An ACK without actions.
    pub const fn new() -> Self {
        Self {
            actions: Vec::new(),
        }
    }

    /// Adds a SET-VAR action.
    #[must_use]
    pub fn set_var(
        mut self,
        scope: VarScope,
        name: impl Into<Bytes>,
        value: impl Into<TypedData>,
    ) -> Self {
        self.actions.push(Action::SetVar {
            scope,
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Adds an UNSET-VAR action.
    #[must_use]
    pub fn unset_var(mut self, scope: VarScope, name: impl Into<Bytes>) -> Self {
        self.actions.push(Action::UnsetVar {
            scope,
            name: name.into(),
        });
        self
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut actions = Vec::new();
        let mut r = Reader::new(payload);
        while !r.is_empty() {
            let action = r.u8("action type")?;
            let nb_args = r.u8("action arguments")?;
            let expected = match action {
                Action::SET_VAR => 3,
                Action::UNSET_VAR => 2,
                other => return Err(DecodeError::UnknownAction(other)),
            };
            if nb_args != expected {
                return Err(DecodeError::ActionArgCount {
                    action,
                    found: nb_args,
                    expected,
                });
            }
            let scope = VarScope(r.u8("variable scope")?);
            let name = r.string("variable name")?;
            actions.push(if action == Action::SET_VAR {
                Action::SetVar {
                    scope,
                    name,
                    value: r.typed()?,
                }
            } else {
                Action::UnsetVar { scope, name }
            });
        }
        Ok(Self { actions })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.actions.iter().map(Action::encoded_len).sum()
    }

    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        for action in &self.actions {
            action.encode(buf);
        }
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Ack {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut ack = Self::new();
        for _ in 0..u.int_in_range(0u8..=8)? {
            let scope: VarScope = u.arbitrary()?;
            let name = Bytes::from(u.arbitrary::<Vec<u8>>()?);
            ack = if u.arbitrary()? {
                ack.set_var(scope, name, u.arbitrary::<TypedData>()?)
            } else {
                ack.unset_var(scope, name)
            };
        }
        Ok(ack)
    }
}
