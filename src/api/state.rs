//! The API's state: what every handler and middleware is handed. It holds the running
//! service (below the API) and would hold anything purely HTTP; it reads as the service.

use crate::service::Service;
use std::ops::Deref;

/// What every handler shares: the service (through `Deref`, so `app.engine`,
/// `app.pipeline(name)`… read the service's).
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
}

impl AppState {
    pub fn new(service: Service) -> AppState {
        AppState { service }
    }
}

impl Deref for AppState {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.service
    }
}
