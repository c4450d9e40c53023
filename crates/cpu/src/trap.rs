//! Trap causes. Exceptions are synchronous (raised by the instruction being
//! executed, which then does not retire); interrupts are asynchronous and are
//! taken only at instruction boundaries. The numeric values are the
//! architectural `mcause`/`scause` codes.

/// Synchronous exception causes (privileged spec table 3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Exception {
    InstructionMisaligned = 0,
    InstructionAccessFault = 1,
    IllegalInstruction = 2,
    Breakpoint = 3,
    LoadMisaligned = 4,
    LoadAccessFault = 5,
    StoreMisaligned = 6,
    StoreAccessFault = 7,
    EcallFromU = 8,
    EcallFromS = 9,
    EcallFromM = 11,
    InstructionPageFault = 12,
    LoadPageFault = 13,
    StorePageFault = 15,
}

/// Interrupt causes (without the interrupt bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Interrupt {
    SupervisorSoftware = 1,
    MachineSoftware = 3,
    SupervisorTimer = 5,
    MachineTimer = 7,
    SupervisorExternal = 9,
    MachineExternal = 11,
}

/// A pending synchronous trap: the cause and the value for `xtval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trap {
    pub cause: Exception,
    pub tval: u64,
}

impl Trap {
    #[inline]
    pub fn new(cause: Exception, tval: u64) -> Self {
        Trap { cause, tval }
    }
    #[inline]
    pub fn illegal(bits: u64) -> Self {
        Trap::new(Exception::IllegalInstruction, bits)
    }
}

/// Kind of memory access, used to pick the permission check and the fault cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Fetch,
    Load,
    Store,
}

impl Access {
    pub fn page_fault(self) -> Exception {
        match self {
            Access::Fetch => Exception::InstructionPageFault,
            Access::Load => Exception::LoadPageFault,
            Access::Store => Exception::StorePageFault,
        }
    }
    pub fn access_fault(self) -> Exception {
        match self {
            Access::Fetch => Exception::InstructionAccessFault,
            Access::Load => Exception::LoadAccessFault,
            Access::Store => Exception::StoreAccessFault,
        }
    }
    pub fn misaligned(self) -> Exception {
        match self {
            Access::Fetch => Exception::InstructionMisaligned,
            Access::Load => Exception::LoadMisaligned,
            Access::Store => Exception::StoreMisaligned,
        }
    }
}
