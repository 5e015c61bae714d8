//! The layout's paths as a tree of elements, so that each element read is
//! placed by its name among its parent's children alone.

use crate::schema::{XmlLayout, XmlName};

/// An element's place in the layout's [`Tree`]; [`OFF`] for an element on
/// no path the layout names.
pub(super) type NodeId = u32;
pub(super) const OFF: NodeId = NodeId::MAX;
/// The document, above its root element.
pub(super) const DOCUMENT: NodeId = 0;

/// The layout's paths as a tree of elements from the document down: each
/// element read is placed by looking among its parent's children only, and
/// the record, its repeating group and each column are then one node each.
pub(super) struct Tree<'s> {
    nodes: Vec<Node<'s>>,
    pub(super) record: NodeId,
    /// The repeating group's element, when the layout has one.
    pub(super) group: Option<NodeId>,
}

#[derive(Default)]
struct Node<'s> {
    name: Option<&'s XmlName>,
    children: Vec<NodeId>,
    /// The column whose value is this element's text.
    column: Option<usize>,
    /// The columns whose values are attributes of this element.
    attributes: Vec<(&'s XmlName, usize)>,
}

impl<'s> Tree<'s> {
    pub(super) fn new(layout: &'s XmlLayout) -> Tree<'s> {
        let mut tree = Tree {
            nodes: vec![Node::default()],
            record: OFF,
            group: None,
        };
        tree.record = tree.insert(DOCUMENT, &layout.record);
        if !layout.repeat.is_empty() {
            tree.group = Some(tree.insert(tree.record, &layout.repeat));
        }
        for (column, path) in layout.paths.iter().enumerate() {
            let base = if layout.in_repeat[column] {
                tree.group.unwrap_or(OFF)
            } else if !layout.repeat.is_empty() && path.elements.starts_with(&layout.repeat) {
                // Within the group an element is the group's columns' only.
                continue;
            } else {
                tree.record
            };
            if base == OFF {
                continue;
            }
            let at = tree.insert(base, &path.elements);
            let node = &mut tree.nodes[at as usize];
            match &path.attribute {
                Some(attribute) => node.attributes.push((attribute, column)),
                None => {
                    node.column.get_or_insert(column);
                }
            }
        }
        tree
    }

    fn insert(&mut self, mut at: NodeId, path: &'s [XmlName]) -> NodeId {
        for name in path {
            let known = self.nodes[at as usize]
                .children
                .iter()
                .copied()
                .find(|&child| self.nodes[child as usize].name == Some(name));
            at = match known {
                Some(child) => child,
                None => {
                    let child = NodeId::try_from(self.nodes.len())
                        .expect("a layout names fewer than 2^32 elements");
                    self.nodes.push(Node {
                        name: Some(name),
                        ..Node::default()
                    });
                    self.nodes[at as usize].children.push(child);
                    child
                }
            };
        }
        at
    }

    /// The node of an element read under `parent`.
    pub(super) fn child(&self, parent: NodeId, namespace: Option<&[u8]>, local: &[u8]) -> NodeId {
        if parent == OFF {
            return OFF;
        }
        self.nodes[parent as usize]
            .children
            .iter()
            .copied()
            .find(|&child| {
                self.nodes[child as usize]
                    .name
                    .is_some_and(|name| is(name, namespace, local))
            })
            .unwrap_or(OFF)
    }

    /// The column read from an attribute of an element at `node`.
    pub(super) fn attribute(
        &self,
        node: NodeId,
        namespace: Option<&[u8]>,
        local: &[u8],
    ) -> Option<usize> {
        if node == OFF {
            return None;
        }
        self.nodes[node as usize]
            .attributes
            .iter()
            .find(|(name, _)| is(name, namespace, local))
            .map(|(_, column)| *column)
    }

    /// The column read from the text of an element at `node`.
    pub(super) fn column(&self, node: NodeId) -> Option<usize> {
        if node == OFF {
            return None;
        }
        self.nodes[node as usize].column
    }
}

/// Whether a name read from a file is `name`.
fn is(name: &XmlName, namespace: Option<&[u8]>, local: &[u8]) -> bool {
    name.local.as_bytes() == local && name.namespace.as_deref().map(str::as_bytes) == namespace
}
