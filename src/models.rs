//! Apple device models: `ProductType` → marketing name, board (`HardwareModel`), family and chip.
//!
//! The table is a sourced data file (`data/models.csv`); the probe uses it to name a device,
//! the simulated lab to fill in what a fleet file leaves out.

use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub product_type: String,
    pub marketing_name: String,
    pub hardware_model: String,
    pub device_class: String,
    pub chip_id: u32,
}

impl Model {
    /// USB product id of a device of this family in normal mode (brief §7, usb.ids):
    /// 0x12a8 modern iPhones, 0x12ab modern iPads, 0x12aa iPod touch.
    pub fn usb_product_id(&self) -> u16 {
        usb_product_id_for_class(&self.device_class)
    }

    /// A12 (0x8020) and later devices have 25-character UDIDs `CCCCCCCC-EEEEEEEEEEEEEEEE`;
    /// older ones 40 hex characters (brief §7).
    pub fn new_style_udid(&self) -> bool {
        self.chip_id >= 0x8020
    }
}

pub fn usb_product_id_for_class(class: &str) -> u16 {
    match class {
        "iPad" => 0x12ab,
        "iPod" => 0x12aa,
        _ => 0x12a8,
    }
}

static TABLE: OnceLock<Vec<Model>> = OnceLock::new();

pub fn all() -> &'static [Model] {
    TABLE.get_or_init(|| {
        let text = include_str!("../data/models.csv");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let mut rdr = csv::Reader::from_reader(body.as_bytes());
        rdr.records()
            .map(|r| {
                let r = r.expect("data/models.csv is well-formed (checked by a test)");
                let chip = r[4].trim_start_matches("0x");
                Model {
                    product_type: r[0].to_string(),
                    marketing_name: r[1].to_string(),
                    hardware_model: r[2].to_string(),
                    device_class: r[3].to_string(),
                    chip_id: u32::from_str_radix(chip, 16).expect("hex chip id"),
                }
            })
            .collect()
    })
}

pub fn lookup(product_type: &str) -> Option<&'static Model> {
    all().iter().find(|m| m.product_type == product_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_loads_and_is_unique() {
        let t = all();
        assert!(t.len() > 40);
        let mut seen = std::collections::HashSet::new();
        for m in t {
            assert!(seen.insert(&m.product_type), "duplicate {}", m.product_type);
            assert!(m.product_type.starts_with(&m.device_class));
        }
        let m = lookup("iPhone12,1").unwrap();
        assert_eq!(m.marketing_name, "iPhone 11");
        assert_eq!(m.usb_product_id(), 0x12a8);
        assert!(m.new_style_udid());
        assert!(!lookup("iPhone10,4").unwrap().new_style_udid());
        assert!(lookup("Watch6,1").is_none());
    }
}
